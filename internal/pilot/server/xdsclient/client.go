// Package xdsclient is a small ADS client for tests and load tools: it
// subscribes like a proxy (CDS, then EDS for the EDS clusters, LDS, then
// RDS for the routes the listeners name), ACKs what it accepts, NACKs what
// a Reject hook refuses, and reports every response. SotW and delta.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// Update is one response as the client saw it.
type Update struct {
	TypeURL string
	Version string
	// Resources is the client's full state of the type after the response
	// (SotW: the response; delta: merged), by name.
	Resources map[string]proto.Message
	// Rejected is the reason the client NACKed it, empty when ACKed.
	Rejected string
}

// Options configures a client.
type Options struct {
	Node  *corev3.Node
	Delta bool
	// Reject, when set, may refuse a response: a non-empty reason NACKs it.
	Reject func(u Update) string
	// Updates receives every response; it must be drained (or nil).
	Updates chan<- Update
	// OnUpdate, when set, is called with every response after the client
	// answered it (ACK or NACK), on the stream's goroutine.
	OnUpdate func(Update)
	// Light clients (SotW only) keep no resources, for load tests: they
	// decode a response only to find the names to subscribe to, once per
	// version through Names, shared by every client. Their connections may
	// use EnvelopeCodec, which leaves the resources of endpoints and routes
	// undecoded.
	Light bool
	Names *NameCache
}

// NameCache remembers the EDS names a clusters version and the RDS names
// a listeners version need (versions are content hashes, so proxies with
// the same configuration share them).
type NameCache struct {
	mu sync.Mutex
	m  map[string][]string
}

func (n *NameCache) get(typeURL, version string, compute func() ([]string, error)) ([]string, error) {
	n.mu.Lock()
	if v, ok := n.m[typeURL+"/"+version]; ok {
		n.mu.Unlock()
		return v, nil
	}
	n.mu.Unlock()
	v, err := compute()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	if n.m == nil {
		n.m = map[string][]string{}
	}
	n.m[typeURL+"/"+version] = v
	n.mu.Unlock()
	return v, nil
}

// Client is one ADS stream.
type Client struct {
	opts   Options
	sotw   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	delta  discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	mu     sync.Mutex
	state  map[string]*typeState
	sentNo bool // node sent
	done   chan struct{}
	err    error
}

type typeState struct {
	acked     string // last accepted version
	nonce     string
	names     []string // subscribed names; nil = wildcard
	resources map[string]proto.Message
	requested bool
}

// Dial opens an ADS stream on conn and subscribes; it returns once the
// first request was sent. The stream runs until ctx ends or fails; Wait
// returns its error.
func Dial(ctx context.Context, conn grpc.ClientConnInterface, opts Options) (*Client, error) {
	c := &Client{opts: opts, state: map[string]*typeState{}, done: make(chan struct{})}
	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	var err error
	if opts.Delta {
		c.delta, err = ads.DeltaAggregatedResources(ctx)
	} else {
		c.sotw, err = ads.StreamAggregatedResources(ctx)
	}
	if err != nil {
		return nil, err
	}
	for _, t := range []string{ClusterType, ListenerType} {
		c.state[t] = &typeState{resources: map[string]proto.Message{}}
	}
	c.state[EndpointType] = &typeState{resources: map[string]proto.Message{}, names: []string{}}
	c.state[RouteType] = &typeState{resources: map[string]proto.Message{}, names: []string{}}
	for _, t := range []string{ClusterType, ListenerType} {
		if err := c.request(t, ""); err != nil {
			return nil, c.streamError(err)
		}
	}
	go c.loop()
	return c, nil
}

// streamError turns io.EOF from Send into the stream's status.
func (c *Client) streamError(err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if c.delta != nil {
		_, err = c.delta.Recv()
	} else {
		_, err = c.sotw.Recv()
	}
	return err
}

// Wait returns when the stream ended, with its error.
func (c *Client) Wait() error {
	<-c.done
	return c.err
}

// Done is closed when the stream ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is the stream's error once Done is closed.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close ends the sending side.
func (c *Client) Close() error {
	if c.delta != nil {
		return c.delta.CloseSend()
	}
	return c.sotw.CloseSend()
}

// request sends a request for typeURL; errMsg non-empty makes it a NACK.
// c.mu is not held by callers other than the loop.
func (c *Client) request(typeURL, errMsg string) error {
	st := c.state[typeURL]
	var node *corev3.Node
	if !c.sentNo {
		node = c.opts.Node
		c.sentNo = true
	}
	var detail = grpcstatus.New(codes.InvalidArgument, errMsg).Proto()
	if errMsg == "" {
		detail = nil
	}
	if c.delta != nil {
		req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResponseNonce: st.nonce, ErrorDetail: detail}
		if !st.requested {
			req.ResourceNamesSubscribe = st.names
		}
		st.requested = true
		return c.delta.Send(req)
	}
	st.requested = true
	return c.sotw.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typeURL, VersionInfo: st.acked,
		ResponseNonce: st.nonce, ResourceNames: st.names, ErrorDetail: detail})
}

// subscribe changes the names of EDS or RDS; the delta client sends the
// difference, the SotW one the new list.
func (c *Client) subscribe(typeURL string, names []string) error {
	st := c.state[typeURL]
	names = append([]string(nil), names...)
	sort.Strings(names)
	if st.requested && equal(st.names, names) || !st.requested && len(names) == 0 {
		return nil // like a proxy, do not ask for nothing (which would mean everything)
	}
	if c.delta != nil && st.requested {
		var add, remove []string
		old := map[string]bool{}
		for _, n := range st.names {
			old[n] = true
		}
		now := map[string]bool{}
		for _, n := range names {
			now[n] = true
			if !old[n] {
				add = append(add, n)
			}
		}
		for _, n := range st.names {
			if !now[n] {
				remove = append(remove, n)
				delete(st.resources, n)
			}
		}
		st.names = names
		return c.delta.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: add, ResourceNamesUnsubscribe: remove})
	}
	st.names = names
	return c.request(typeURL, "")
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c *Client) loop() {
	defer close(c.done)
	for {
		var err error
		if c.delta != nil {
			var resp *discovery.DeltaDiscoveryResponse
			if resp, err = c.delta.Recv(); err == nil {
				err = c.handleDelta(resp)
			}
		} else {
			var resp *discovery.DiscoveryResponse
			if resp, err = c.sotw.Recv(); err == nil {
				err = c.handleSotw(resp)
			}
		}
		if err != nil {
			c.err = err
			return
		}
	}
}

func decode(a *anypb.Any) (proto.Message, string, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, "", err
	}
	if n, ok := m.(interface{ GetName() string }); ok && n.GetName() != "" {
		return m, n.GetName(), nil
	}
	if n, ok := m.(interface{ GetClusterName() string }); ok {
		return m, n.GetClusterName(), nil
	}
	return nil, "", fmt.Errorf("a %s without a name", a.GetTypeUrl())
}

func (c *Client) handleSotw(resp *discovery.DiscoveryResponse) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[resp.GetTypeUrl()]
	if !ok {
		return fmt.Errorf("response of unrequested type %s", resp.GetTypeUrl())
	}
	if c.opts.Light {
		return c.finishLight(resp)
	}
	res := map[string]proto.Message{}
	for _, a := range resp.GetResources() {
		m, name, err := decode(a)
		if err != nil {
			return err
		}
		res[name] = m
	}
	return c.finish(resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), res, func() { st.resources = res })
}

func (c *Client) handleDelta(resp *discovery.DeltaDiscoveryResponse) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[resp.GetTypeUrl()]
	if !ok {
		return fmt.Errorf("response of unrequested type %s", resp.GetTypeUrl())
	}
	res := make(map[string]proto.Message, len(st.resources))
	for k, v := range st.resources {
		res[k] = v
	}
	for _, r := range resp.GetResources() {
		m, _, err := decode(r.GetResource())
		if err != nil {
			return err
		}
		res[r.GetName()] = m
	}
	for _, n := range resp.GetRemovedResources() {
		delete(res, n)
	}
	return c.finish(resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), res, func() { st.resources = res })
}

// finish decides ACK or NACK, reports the update and follows the
// dependencies (EDS names from clusters, RDS names from listeners).
func (c *Client) finish(typeURL, version, nonce string, res map[string]proto.Message, accept func()) error {
	st := c.state[typeURL]
	st.nonce = nonce
	u := Update{TypeURL: typeURL, Version: version, Resources: res}
	if c.opts.Reject != nil {
		u.Rejected = c.opts.Reject(u)
	}
	if u.Rejected == "" {
		accept()
		st.acked = version
	}
	if c.opts.Updates != nil {
		c.opts.Updates <- u
	}
	if err := c.request(typeURL, u.Rejected); err != nil {
		return err
	}
	if c.opts.OnUpdate != nil {
		c.opts.OnUpdate(u)
	}
	if u.Rejected != "" {
		return nil
	}
	switch typeURL {
	case ClusterType:
		return c.subscribe(EndpointType, edsNames(res))
	case ListenerType:
		names, err := rdsNames(res)
		if err != nil {
			return err
		}
		return c.subscribe(RouteType, names)
	}
	return nil
}

// finishLight ACKs a response and follows its dependencies without
// keeping it.
func (c *Client) finishLight(resp *discovery.DiscoveryResponse) error {
	typeURL := resp.GetTypeUrl()
	st := c.state[typeURL]
	st.nonce, st.acked = resp.GetNonce(), resp.GetVersionInfo()
	if err := c.request(typeURL, ""); err != nil {
		return err
	}
	if c.opts.OnUpdate != nil {
		c.opts.OnUpdate(Update{TypeURL: typeURL, Version: resp.GetVersionInfo()})
	}
	if typeURL != ClusterType && typeURL != ListenerType {
		return nil
	}
	if c.opts.Names == nil {
		c.opts.Names = &NameCache{}
	}
	names, err := c.opts.Names.get(typeURL, resp.GetVersionInfo(), func() ([]string, error) {
		res := map[string]proto.Message{}
		for _, a := range resp.GetResources() {
			m, name, err := decode(a)
			if err != nil {
				return nil, err
			}
			res[name] = m
		}
		if typeURL == ClusterType {
			return edsNames(res), nil
		}
		return rdsNames(res)
	})
	if err != nil {
		return err
	}
	if typeURL == ClusterType {
		return c.subscribe(EndpointType, names)
	}
	return c.subscribe(RouteType, names)
}

func edsNames(clusters map[string]proto.Message) []string {
	names := []string{}
	for name, m := range clusters {
		cl, ok := m.(*clusterv3.Cluster)
		if !ok || cl.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		if sn := cl.GetEdsClusterConfig().GetServiceName(); sn != "" {
			name = sn
		}
		names = append(names, name)
	}
	return names
}

func rdsNames(listeners map[string]proto.Message) ([]string, error) {
	set := map[string]bool{}
	for _, m := range listeners {
		l, ok := m.(*listenerv3.Listener)
		if !ok {
			continue
		}
		chains := l.GetFilterChains()
		if l.GetDefaultFilterChain() != nil {
			chains = append(chains, l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			for _, f := range fc.GetFilters() {
				tc := f.GetTypedConfig()
				if tc == nil || tc.GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
					continue
				}
				var h hcm.HttpConnectionManager
				if err := tc.UnmarshalTo(&h); err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				if n := h.GetRds().GetRouteConfigName(); n != "" {
					set[n] = true
				}
			}
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	return names, nil
}

// Resources returns the accepted state of a type.
func (c *Client) Resources(typeURL string) map[string]proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[typeURL]
	if !ok {
		return nil
	}
	out := make(map[string]proto.Message, len(st.resources))
	for k, v := range st.resources {
		out[k] = v
	}
	return out
}

// Acked returns the last accepted version of a type.
func (c *Client) Acked(typeURL string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.state[typeURL]; ok {
		return st.acked
	}
	return ""
}

// EnvelopeCodec is a gRPC codec for Light clients (grpc.ForceCodecV2 on
// their connections): SotW responses of endpoints and routes are decoded
// only as far as a Light client reads them (type, version and nonce),
// their resources are skipped in the received buffers without a copy.
// Clusters, listeners and every other message are decoded in full.
// Load tools use it so that they measure the control plane rather than
// their own decoding of the configuration every simulated proxy receives.
type EnvelopeCodec struct{}

var protoCodec = encoding.GetCodecV2("proto")

// Name implements encoding.CodecV2.
func (EnvelopeCodec) Name() string { return "proto" }

// Marshal implements encoding.CodecV2.
func (EnvelopeCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

// Unmarshal implements encoding.CodecV2.
func (EnvelopeCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if resp, ok := v.(*discovery.DiscoveryResponse); ok {
		if env, ok := envelope(data); ok && (env.TypeUrl == EndpointType || env.TypeUrl == RouteType) {
			resp.Reset()
			resp.VersionInfo, resp.TypeUrl, resp.Nonce = env.VersionInfo, env.TypeUrl, env.Nonce
			return nil
		}
	}
	return protoCodec.Unmarshal(data, v)
}

// wireReader reads protobuf wire format across the buffers of a message.
type wireReader struct {
	bufs [][]byte
	err  bool
}

func (r *wireReader) done() bool {
	for len(r.bufs) > 0 && len(r.bufs[0]) == 0 {
		r.bufs = r.bufs[1:]
	}
	return len(r.bufs) == 0
}

func (r *wireReader) byte() byte {
	if r.done() {
		r.err = true
		return 0
	}
	b := r.bufs[0][0]
	r.bufs[0] = r.bufs[0][1:]
	return b
}

func (r *wireReader) varint() uint64 {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b := r.byte()
		v |= uint64(b&0x7f) << shift
		if b < 0x80 || r.err {
			return v
		}
	}
	r.err = true
	return 0
}

// bytes returns the next n bytes (copied) when keep, else skips them.
func (r *wireReader) bytes(n uint64, keep bool) []byte {
	var out []byte
	for n > 0 {
		if r.done() {
			r.err = true
			return nil
		}
		k := min(n, uint64(len(r.bufs[0])))
		if keep {
			out = append(out, r.bufs[0][:k]...)
		}
		r.bufs[0] = r.bufs[0][k:]
		n -= k
	}
	return out
}

// envelope reads a DiscoveryResponse's version_info, type_url and nonce.
func envelope(data mem.BufferSlice) (*discovery.DiscoveryResponse, bool) {
	r := &wireReader{bufs: make([][]byte, 0, len(data))}
	for _, b := range data {
		r.bufs = append(r.bufs, b.ReadOnlyData())
	}
	out := &discovery.DiscoveryResponse{}
	for !r.done() && !r.err {
		tag := r.varint()
		field, wt := tag>>3, tag&7
		switch wt {
		case 0:
			r.varint()
		case 1:
			r.bytes(8, false)
		case 5:
			r.bytes(4, false)
		case 2:
			n := r.varint()
			keep := field == 1 || field == 4 || field == 5
			b := r.bytes(n, keep)
			switch field {
			case 1:
				out.VersionInfo = string(b)
			case 4:
				out.TypeUrl = string(b)
			case 5:
				out.Nonce = string(b)
			}
		default:
			return nil, false
		}
	}
	return out, !r.err
}
