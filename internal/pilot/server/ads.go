package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// The server handles ADS streams itself (go-control-plane provides the
// protos and the gRPC service): each stream keeps, per type, a pointer to
// the shared, immutable resource set it last sent and its interned
// subscription, never a copy of resources or names, so that thousands of
// streams cost little more than their goroutines.
//
// Protocol, per type on a stream (SotW and delta alike):
//   - a response is sent only after the client answered the previous one
//     of the type (its next request, ACK or NACK), so a proxy has at most
//     one response per type in flight and a slow one gets the newest
//     configuration once it is ready rather than every intermediate one;
//   - a type is sent only when its version (a content hash) differs from
//     what the stream was last sent, or the subscription changed: a push
//     that changed only endpoints sends only EDS;
//   - a NACK (error_detail set on the request answering the last response)
//     is logged and counted with the proxy's message; the rejected version
//     counts as sent, so it is not sent again (the proxy keeps its last
//     good configuration) until the configuration changes;
//   - SotW requests that answer an older response (stale nonce) are
//     ignored, as Envoy's protocol says; the client answers the newer one.
//
// Responses in flight (sent, not yet answered) are bounded for the whole
// server to maxInFlight, as Istio throttles its pushes: a response waits
// for a slot, given back when the proxy answers it, when its stream ends,
// or after inFlightTimeout. This bounds the encoded configurations sitting
// in gRPC's send buffers while slow proxies read them.

const (
	maxInFlight     = 100
	inFlightTimeout = 5 * time.Second
)

// pushOrder is the order in which types are sent: clusters before their
// endpoints, listeners before their routes, as ADS requires.
var pushOrder = []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType, xds.SecretType}

// streamKey tells SotW and delta streams apart.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one ADS stream.
type stream struct {
	key       streamKey
	identity  Identity
	plaintext bool
	node      *node
	connected time.Time
	wake      chan struct{} // the node's configuration changed

	mu   sync.Mutex // guards sent: the debug endpoints read it
	sent map[string]*sentType
}

// sentType is a stream's state of one type.
type sentType struct {
	// Version and Nonce of the last response; Set the resources it was
	// built from (what the proxy holds once it ACKed) and Count how many
	// of them it carried.
	Version, Nonce string
	Set            *resourceSet
	Count          int
	// Acked is the last version the client accepted; Rejected the last it
	// refused, with the reason.
	Acked, Rejected, RejectReason string

	requested bool     // the client asked for the type
	ready     bool     // the client answered the last response
	wildcard  bool     // subscribed to every resource of the type
	names     *nameSet // subscribed names (besides the wildcard)
	// the subscription the last response followed
	sentWildcard bool
	sentNames    *nameSet
	// initial are a delta client's initial_resource_versions, until the
	// first response.
	initial map[string]string
	release func() // gives back the in-flight slot of the last response
}

func (st *stream) sentOf(typeURL string) *sentType {
	if st.sent == nil {
		st.sent = map[string]*sentType{}
	}
	t, ok := st.sent[typeURL]
	if !ok {
		t = &sentType{}
		st.sent[typeURL] = t
	}
	return t
}

// answered gives back the in-flight slot of the response a request of
// typeURL with nonce answers. Called as requests are read, before they are
// handled.
func (st *stream) answered(typeURL, nonce string) {
	st.mu.Lock()
	var f func()
	if t := st.sent[typeURL]; t != nil && t.release != nil && nonce == t.Nonce {
		f, t.release = t.release, nil
	}
	st.mu.Unlock()
	if f != nil {
		f()
	}
}

// releaseAll gives back every slot the stream holds.
func (st *stream) releaseAll() {
	st.mu.Lock()
	var fs []func()
	for _, t := range st.sent {
		if t.release != nil {
			fs = append(fs, t.release)
			t.release = nil
		}
	}
	st.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// request is a SotW or delta request.
type request struct {
	node                    *corev3.Node
	typeURL, version, nonce string
	errorDetail             *statuspb.Status
	names                   []string // SotW
	subscribe, unsubscribe  []string // delta
	initial                 map[string]string
}

// adsService registers the server's streams on a gRPC server; ctx bounds
// them.
type adsService struct {
	s   *Server
	ctx context.Context
}

var streamIDs atomic.Int64

// StreamAggregatedResources serves a SotW stream.
func (a adsService) StreamAggregatedResources(ss discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.s.serve(a.ctx, ss.Context(), false, func() (*request, error) {
		r, err := ss.Recv()
		if err != nil {
			return nil, err
		}
		return &request{node: r.GetNode(), typeURL: r.GetTypeUrl(), version: r.GetVersionInfo(), nonce: r.GetResponseNonce(),
			errorDetail: r.GetErrorDetail(), names: r.GetResourceNames()}, nil
	}, sender{sotw: ss.Send, msg: ss.SendMsg, prepare: func(r *discovery.DiscoveryResponse) (any, error) {
		pm := &grpc.PreparedMsg{}
		if err := pm.Encode(ss, r); err != nil {
			return nil, err
		}
		return pm, nil
	}})
}

// DeltaAggregatedResources serves a delta stream.
func (a adsService) DeltaAggregatedResources(ds discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.s.serve(a.ctx, ds.Context(), true, func() (*request, error) {
		r, err := ds.Recv()
		if err != nil {
			return nil, err
		}
		return &request{node: r.GetNode(), typeURL: r.GetTypeUrl(), nonce: r.GetResponseNonce(), errorDetail: r.GetErrorDetail(),
			subscribe: r.GetResourceNamesSubscribe(), unsubscribe: r.GetResourceNamesUnsubscribe(),
			initial: r.GetInitialResourceVersions()}, nil
	}, sender{delta: ds.Send})
}

// sender sends a stream's responses. With prepare, SotW responses are
// encoded once (grpc.PreparedMsg) and the encoding shared by every stream
// that is sent the same resources: the response of a push to thousands of
// proxies is encoded once per configuration group instead of once per
// proxy, and responses waiting in gRPC's buffers share their bytes.
type sender struct {
	sotw    func(*discovery.DiscoveryResponse) error
	delta   func(*discovery.DeltaDiscoveryResponse) error
	prepare func(*discovery.DiscoveryResponse) (any, error)
	msg     func(any) error
}

// serve runs one stream: a goroutine reads requests, this one handles
// them and sends what the stream lacks whenever a request arrives or the
// node's configuration changes.
func (s *Server) serve(base, ctx context.Context, delta bool, recv func() (*request, error), out sender) error {
	st, err := s.open(ctx, streamKey{delta: delta, id: streamIDs.Add(1)})
	if err != nil {
		return err
	}
	defer func() {
		st.releaseAll()
		s.disconnect(st)
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if base != nil {
		stop := context.AfterFunc(base, cancel)
		defer stop()
	}
	reqs := make(chan *request, 1)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				recvErr <- err
				return
			}
			st.answered(r.typeURL, r.nonce)
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			if base != nil && base.Err() != nil {
				return status.Error(codes.Unavailable, "the control plane is shutting down")
			}
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case r := <-reqs:
			if err := s.handle(st, r); err != nil {
				return err
			}
		case <-st.wake:
		}
		if st.node == nil {
			continue
		}
		if err := s.respond(ctx, st, out); err != nil {
			return err
		}
	}
}

// open authenticates a new stream and registers it.
func (s *Server) open(ctx context.Context, key streamKey) (*stream, error) {
	st := &stream{key: key, connected: time.Now(), wake: make(chan struct{}, 1)}
	ti, isTLS := peerTLS(ctx)
	switch {
	case isTLS:
		id, err := identityFromChains(ti.State.VerifiedChains, s.opts.TrustDomain)
		if err != nil {
			s.log.Warn("refused xDS stream", "err", err)
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		st.identity = id
	case s.opts.PlaintextNodeIdentity:
		st.plaintext = true
	default:
		return nil, status.Error(codes.Unauthenticated, errNoClientCert.Error())
	}
	s.mu.Lock()
	s.streams[key] = st
	s.metrics.connected.Set(float64(len(s.streams)))
	s.mu.Unlock()
	return st, nil
}

// checkNode checks a request's node against the stream's identity (every
// request that carries a node, not only the first) and connects the node
// on the first one.
func (s *Server) checkNode(st *stream, n *corev3.Node) error {
	if st.node != nil {
		if n != nil && n.GetId() != "" && n.GetId() != st.node.id {
			return status.Errorf(codes.PermissionDenied, "node id changed on the stream from %q to %q", st.node.id, n.GetId())
		}
		return nil
	}
	if st.plaintext {
		id, err := identityFromNode(n, s.opts.TrustDomain)
		if err != nil {
			return status.Error(codes.Unauthenticated, err.Error())
		}
		st.identity = id
	}
	return s.connect(context.Background(), st, n)
}

// handle applies one request to the stream's state.
func (s *Server) handle(st *stream, r *request) error {
	if err := s.checkNode(st, r.node); err != nil {
		return err
	}
	if r.typeURL == "" {
		return status.Error(codes.InvalidArgument, "a request without type_url")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.sentOf(r.typeURL)
	answers := r.nonce != "" && r.nonce == t.Nonce
	if !st.key.delta && r.nonce != "" && !answers {
		return nil // answers an older response
	}
	if answers {
		if r.errorDetail != nil {
			t.Rejected, t.RejectReason = t.Version, r.errorDetail.GetMessage()
			s.nack(st, r.typeURL, r.nonce, t.Version, t.RejectReason)
		} else {
			t.Acked = t.Version
		}
	}
	first := !t.requested
	t.requested, t.ready = true, true
	if !st.key.delta {
		// SotW: the names replace the subscription. No names on the
		// first request is the legacy wildcard, and stays one.
		names := r.names
		wildcard := slices.Contains(names, "*")
		if wildcard {
			names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "*" })
		} else if len(names) == 0 && (first || t.wildcard) {
			wildcard = true
		}
		t.wildcard = wildcard
		if !t.names.equal(names) {
			t.names = internNames(names)
		}
		return nil
	}
	// Delta: subscriptions change by difference; the first request
	// without names is the legacy wildcard.
	if first {
		t.initial = r.initial
		if t.initial == nil {
			t.initial = map[string]string{}
		}
		if len(r.subscribe) == 0 {
			t.wildcard = true
		}
	}
	if len(r.subscribe) == 0 && len(r.unsubscribe) == 0 {
		return nil
	}
	set := map[string]bool{}
	if t.names != nil {
		for _, n := range t.names.names {
			set[n] = true
		}
	}
	for _, n := range r.subscribe {
		if n == "*" {
			t.wildcard = true
		} else {
			set[n] = true
		}
	}
	for _, n := range r.unsubscribe {
		if n == "*" {
			t.wildcard = false
		} else {
			delete(set, n)
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	if !t.names.equal(names) {
		t.names = internNames(names)
	}
	return nil
}

// nack records a rejected response.
func (s *Server) nack(st *stream, typeURL, nonce, version, msg string) {
	s.metrics.rejects.WithLabelValues(typeLabel(typeURL)).Inc()
	id := ""
	if st.node != nil {
		id = st.node.id
	}
	s.log.Warn("proxy rejected configuration", "proxy", id, "type", typeURL, "version", version, "nonce", nonce, "error", msg)
}

// respond sends, in push order, every type the client is ready for and
// whose configuration it lacks.
func (s *Server) respond(ctx context.Context, st *stream, out sender) error {
	cfg := st.node.cfg.Load()
	if cfg == nil {
		return nil
	}
	for _, typeURL := range pushOrder {
		set := cfg.sets[typeURL]
		if set == nil {
			continue
		}
		st.mu.Lock()
		t := st.sent[typeURL]
		if t == nil || !t.ready {
			st.mu.Unlock()
			continue
		}
		var sotwResp *encodedResponse
		var deltaResp *discovery.DeltaDiscoveryResponse
		count := 0
		if st.key.delta {
			deltaResp, count = deltaResponse(t, set)
		} else if (t.wildcard || t.names != nil) && (t.Version != set.version || t.Set == nil ||
			t.sentWildcard != t.wildcard || t.sentNames != t.names) {
			var sub *nameSet
			if !t.wildcard {
				sub = t.names
			}
			st.mu.Unlock()
			var err error
			if sotwResp, err = set.encoded(sub, out.prepare); err != nil {
				s.metrics.internalErrors.Inc()
				return err
			}
			st.mu.Lock()
			count = sotwResp.count
		}
		if sotwResp == nil && deltaResp == nil {
			if st.key.delta {
				// Nothing to send: the client holds set already.
				t.Set, t.sentWildcard, t.sentNames, t.initial = set, t.wildcard, t.names, nil
			}
			st.mu.Unlock()
			continue
		}
		st.mu.Unlock()

		select {
		case s.inFlight <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		var once sync.Once
		free := func() { once.Do(func() { <-s.inFlight }) }
		timer := time.AfterFunc(inFlightTimeout, free)
		var nonce string
		if sotwResp != nil {
			nonce = sotwResp.nonce
		} else {
			nonce = strconv.FormatUint(nonces.Add(1), 10)
		}
		st.mu.Lock()
		t.Version, t.Nonce, t.Set, t.Count = set.version, nonce, set, count
		t.sentWildcard, t.sentNames, t.initial = t.wildcard, t.names, nil
		t.ready = false
		t.release = func() { timer.Stop(); free() }
		st.mu.Unlock()
		s.metrics.pushes.WithLabelValues(typeLabel(typeURL)).Inc()
		var err error
		switch {
		case sotwResp != nil && sotwResp.prepared != nil:
			err = out.msg(sotwResp.prepared)
		case sotwResp != nil:
			err = out.sotw(sotwResp.resp)
		default:
			deltaResp.Nonce = nonce
			err = out.delta(deltaResp)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// deltaResponse returns what a delta client lacks of set (nil when
// nothing) and how many resources it carries; st.mu held.
func deltaResponse(t *sentType, set *resourceSet) (*discovery.DeltaDiscoveryResponse, int) {
	if t.initial == nil && t.Set == set && t.sentWildcard == t.wildcard && t.sentNames == t.names {
		return nil, 0
	}
	// What the client holds: its initial versions until the first
	// response, then the last set sent, as far as it was subscribed.
	held := func(name string) (string, bool) {
		if t.initial != nil {
			v, ok := t.initial[name]
			return v, ok
		}
		if t.Set == nil || (!t.sentWildcard && !t.sentNames.has(name)) {
			return "", false
		}
		return t.Set.versionOf(name)
	}
	subscribed := func(name string) bool { return t.wildcard || t.names.has(name) }
	resp := &discovery.DeltaDiscoveryResponse{SystemVersionInfo: set.version, TypeUrl: set.typeURL}
	for i, name := range set.names {
		if !subscribed(name) {
			continue
		}
		v := set.resourceVersion(i)
		if hv, ok := held(name); ok && hv == v {
			continue
		}
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: name, Version: v, Resource: set.wire[i]})
	}
	removed := func(name string) {
		if _, ok := set.index[name]; !ok && subscribed(name) {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	if t.initial != nil {
		for name := range t.initial {
			removed(name)
		}
		slices.Sort(resp.RemovedResources)
	} else if t.Set != nil {
		for _, name := range t.Set.names {
			if t.sentWildcard || t.sentNames.has(name) {
				removed(name)
			}
		}
	}
	// The first response of a type is sent even when empty, so that the
	// client knows the server's state.
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && t.Nonce != "" {
		return nil, 0
	}
	return resp, len(resp.Resources)
}
