// Package xdsclient is the proxy's ADS client (state of the world, per
// docs/xds.md): it connects to the control plane over mTLS with the
// workload certificate, subscribes to clusters and listeners (wildcard),
// then to the endpoints, routes and gateway secrets they name, builds a new
// config.Snapshot for every response and hands it to the data plane. An
// accepted snapshot is ACKed; a rejected one is NACKed with the data
// plane's error and the previous snapshot stays in force. When the stream
// breaks, the last good snapshot keeps serving while the client reconnects
// with jittered exponential backoff and resumes from the versions it holds.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// Applier is the part of the data plane the client drives: Apply validates
// and installs a complete snapshot atomically, or changes nothing and
// returns why.
type Applier interface {
	Apply(snap *config.Snapshot) error
}

// The types the client subscribes to, in the order it requests them.
var typeOrder = []string{
	resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType,
	resourcev3.RouteType, resourcev3.SecretType,
}

var typeLabel = map[string]string{
	resourcev3.ClusterType: "cds", resourcev3.EndpointType: "eds", resourcev3.ListenerType: "lds",
	resourcev3.RouteType: "rds", resourcev3.SecretType: "sds",
}

// Options configure a Client.
type Options struct {
	// Address is the control plane's host:port (DISCOVERY_ADDRESS).
	Address string
	// ServerName verifies the control plane's certificate; default:
	// Address's host.
	ServerName string
	Node       *config.Node
	// Secrets give the client certificate and the roots that verify the
	// control plane; both are read at every connection.
	Secrets   config.Secrets
	Dataplane Applier
	Log       *slog.Logger
	// Reconnection backoff: from BackoffMin (default 1s), doubling, up to
	// BackoffMax (default 30s), ±20% jitter.
	BackoffMin, BackoffMax time.Duration
}

// Client is an ADS client. Run it; it is safe to read from any goroutine.
type Client struct {
	opts Options
	log  *slog.Logger
	node *core.Node

	connected prometheus.Gauge
	updates   *prometheus.CounterVec
	rejects   *prometheus.CounterVec
	isUp      atomic.Bool

	mu     sync.Mutex
	snap   *config.Snapshot
	state  map[string]*typeState
	synced chan struct{}
}

// typeState is what the client holds per type URL.
type typeState struct {
	version string   // last accepted, kept across streams
	nonce   string   // last received on the current stream
	names   []string // subscribed names (sorted); nil for wildcard types
	acked   bool     // a response was accepted once
}

// New checks opts and returns a client holding an empty snapshot.
func New(opts Options) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("no discovery address")
	}
	if opts.Node == nil || opts.Secrets == nil || opts.Dataplane == nil {
		return nil, errors.New("node, secrets and data plane are required")
	}
	if opts.ServerName == "" {
		host, _, err := net.SplitHostPort(opts.Address)
		if err != nil {
			return nil, fmt.Errorf("discovery address %q: %w", opts.Address, err)
		}
		opts.ServerName = host
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Client{
		opts: opts, log: opts.Log, node: nodeProto(opts.Node),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mizzen_proxy_xds_connected",
			Help: "1 while the proxy's ADS stream to the control plane is up.",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mizzen_proxy_xds_updates_total",
			Help: "xDS responses the proxy accepted, by type (cds, eds, lds, rds, sds).",
		}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mizzen_proxy_xds_rejects_total",
			Help: "xDS responses the proxy rejected (NACKed), by type.",
		}, []string{"type"}),
		snap:   emptySnapshot(),
		state:  map[string]*typeState{},
		synced: make(chan struct{}),
	}
	for _, t := range typeOrder {
		c.state[t] = &typeState{}
		c.updates.WithLabelValues(typeLabel[t])
		c.rejects.WithLabelValues(typeLabel[t])
	}
	return c, nil
}

func emptySnapshot() *config.Snapshot {
	return (&config.Snapshot{}).Clone()
}

func nodeProto(n *config.Node) *core.Node {
	fields := map[string]*structpb.Value{}
	for k, v := range n.Metadata {
		fields[k] = structpb.NewStringValue(v)
	}
	return &core.Node{
		Id:            n.ID,
		Cluster:       n.WorkloadName + "." + n.Namespace,
		Metadata:      &structpb.Struct{Fields: fields},
		UserAgentName: "mizzen-proxy",
	}
}

// Collectors returns the client's metrics, to register on the proxy's
// registry.
func (c *Client) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.connected, c.updates, c.rejects}
}

// Snapshot returns the snapshot last accepted by the data plane.
func (c *Client) Snapshot() *config.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// Synced is closed once clusters and listeners have both been accepted:
// the first complete configuration is in force. Endpoints and routes not
// received yet only mean no endpoints or routes yet.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Connected reports whether the stream is up (a response was received on
// the current stream).
func (c *Client) Connected() bool { return c.isUp.Load() }

// Run keeps a stream to the control plane until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.opts.BackoffMin
	for {
		gotResponse, err := c.stream(ctx)
		c.setUp(false)
		if ctx.Err() != nil {
			return nil
		}
		if gotResponse {
			backoff = c.opts.BackoffMin
		}
		wait := backoff + time.Duration((mathrand.Float64()*0.4-0.2)*float64(backoff))
		c.log.Warn("xDS stream ended; keeping the last configuration", "err", err, "reconnectIn", wait)
		backoff = min(2*backoff, c.opts.BackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Client) setUp(up bool) {
	c.isUp.Store(up)
	if up {
		c.connected.Set(1)
	} else {
		c.connected.Set(0)
	}
}

type stream = discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient

// stream runs one ADS stream; it reports whether any response came.
func (c *Client) stream(ctx context.Context) (bool, error) {
	tlsConfig := &tls.Config{
		ServerName: c.opts.ServerName,
		RootCAs:    c.opts.Secrets.RootCAs(),
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.opts.Secrets.WorkloadCertificate()
		},
	}
	conn, err := grpc.NewClient(c.opts.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		return false, fmt.Errorf("connecting to %s: %w", c.opts.Address, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("opening the ADS stream: %w", err)
	}
	// Subscribe again, from the versions held (nonces are per stream).
	c.mu.Lock()
	var reqs []*discovery.DiscoveryRequest
	for _, t := range typeOrder {
		s := c.state[t]
		s.nonce = ""
		if isWildcard(t) || len(s.names) > 0 {
			reqs = append(reqs, c.request(t, nil))
		}
	}
	c.mu.Unlock()
	reqs[0].Node = c.node
	for _, r := range reqs {
		if err := st.Send(r); err != nil {
			return false, fmt.Errorf("subscribing: %w", err)
		}
	}
	got := false
	for {
		resp, err := st.Recv()
		if err != nil {
			return got, err
		}
		if !got {
			got = true
			c.setUp(true)
			c.log.Info("xDS stream up", "address", c.opts.Address)
		}
		if err := c.handle(st, resp); err != nil {
			return got, err
		}
	}
}

func isWildcard(t string) bool {
	return t == resourcev3.ClusterType || t == resourcev3.ListenerType
}

// request is the next request of type t with the state held; c.mu held.
func (c *Client) request(t string, nack error) *discovery.DiscoveryRequest {
	s := c.state[t]
	r := &discovery.DiscoveryRequest{
		TypeUrl:       t,
		VersionInfo:   s.version,
		ResponseNonce: s.nonce,
		ResourceNames: slices.Clone(s.names),
	}
	if nack != nil {
		r.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	return r
}

// handle applies one response and answers it: ACK, or NACK with the
// reason, then any subscription change the accepted resources imply.
func (c *Client) handle(st stream, resp *discovery.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	c.mu.Lock()
	s, ok := c.state[t]
	if !ok {
		c.mu.Unlock()
		c.log.Warn("xDS response of an unrequested type ignored", "type", t)
		return nil
	}
	s.nonce = resp.GetNonce()
	next, err := c.build(t, resp)
	if err == nil {
		err = c.opts.Dataplane.Apply(next)
	}
	if err != nil {
		c.rejects.WithLabelValues(typeLabel[t]).Inc()
		c.log.Warn("xDS update rejected", "type", typeLabel[t], "version", resp.GetVersionInfo(), "err", err)
		req := c.request(t, err)
		c.mu.Unlock()
		return sendErr(st.Send(req))
	}
	c.updates.WithLabelValues(typeLabel[t]).Inc()
	c.log.Debug("xDS update applied", "type", typeLabel[t], "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
	s.version = resp.GetVersionInfo()
	s.acked = true
	c.snap = next
	reqs := []*discovery.DiscoveryRequest{c.request(t, nil)}
	// Follow what the new resources name, as Envoy does: clusters ->
	// endpoints (and secrets), listeners -> routes and secrets.
	switch t {
	case resourcev3.ClusterType:
		reqs = append(reqs, c.resubscribe(resourcev3.EndpointType, endpointNames(next.Clusters))...)
		reqs = append(reqs, c.resubscribe(resourcev3.SecretType, secretNames(next))...)
	case resourcev3.ListenerType:
		reqs = append(reqs, c.resubscribe(resourcev3.RouteType, routeNames(next.Listeners))...)
		reqs = append(reqs, c.resubscribe(resourcev3.SecretType, secretNames(next))...)
	}
	if c.state[resourcev3.ClusterType].acked && c.state[resourcev3.ListenerType].acked {
		select {
		case <-c.synced:
		default:
			close(c.synced)
			c.log.Info("first configuration applied", "clusters", len(next.Clusters), "listeners", len(next.Listeners))
		}
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if err := st.Send(r); err != nil {
			return sendErr(err)
		}
	}
	return nil
}

func sendErr(err error) error {
	if err != nil {
		return fmt.Errorf("sending to the control plane: %w", err)
	}
	return nil
}

// resubscribe records the names of type t and returns the request to send
// when they changed; c.mu held. An empty list is not sent: in SotW it would
// mean "everything"; the resources no longer named are dropped locally.
func (c *Client) resubscribe(t string, names []string) []*discovery.DiscoveryRequest {
	s := c.state[t]
	if slices.Equal(s.names, names) {
		return nil
	}
	s.names = names
	if len(names) == 0 {
		return nil
	}
	return []*discovery.DiscoveryRequest{c.request(t, nil)}
}

// build returns the snapshot that results from resp; c.mu held. Clusters
// and listeners are replaced whole; endpoints, routes and secrets are
// updated by name, and those no longer referenced are dropped.
func (c *Client) build(t string, resp *discovery.DiscoveryResponse) (*config.Snapshot, error) {
	next := c.snap.Clone()
	next.Versions[t] = resp.GetVersionInfo()
	switch t {
	case resourcev3.ClusterType:
		m, err := decodeAll[*cluster.Cluster](resp, func(r *cluster.Cluster) string { return r.GetName() })
		if err != nil {
			return nil, err
		}
		next.Clusters = m
		keep(next.Endpoints, endpointNames(next.Clusters))
		keep(next.Secrets, secretNames(next))
	case resourcev3.ListenerType:
		m, err := decodeAll[*listener.Listener](resp, func(r *listener.Listener) string { return r.GetName() })
		if err != nil {
			return nil, err
		}
		next.Listeners = m
		keep(next.Routes, routeNames(next.Listeners))
		keep(next.Secrets, secretNames(next))
	case resourcev3.EndpointType:
		m, err := decodeAll[*endpoint.ClusterLoadAssignment](resp, func(r *endpoint.ClusterLoadAssignment) string { return r.GetClusterName() })
		if err != nil {
			return nil, err
		}
		merge(next.Endpoints, m, c.state[t].names)
	case resourcev3.RouteType:
		m, err := decodeAll[*route.RouteConfiguration](resp, func(r *route.RouteConfiguration) string { return r.GetName() })
		if err != nil {
			return nil, err
		}
		merge(next.Routes, m, c.state[t].names)
	case resourcev3.SecretType:
		m, err := decodeAll[*tlsv3.Secret](resp, func(r *tlsv3.Secret) string { return r.GetName() })
		if err != nil {
			return nil, err
		}
		merge(next.Secrets, m, c.state[t].names)
	}
	return next, nil
}

// decodeAll unmarshals every resource of resp into a map by name.
func decodeAll[M proto.Message](resp *discovery.DiscoveryResponse, name func(M) string) (map[string]M, error) {
	out := make(map[string]M, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		if a.GetTypeUrl() != resp.GetTypeUrl() {
			return nil, fmt.Errorf("resource %d is a %s in a %s response", i, a.GetTypeUrl(), resp.GetTypeUrl())
		}
		var m M
		m = m.ProtoReflect().Type().New().Interface().(M)
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		n := name(m)
		if n == "" {
			return nil, fmt.Errorf("resource %d has no name", i)
		}
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("resource %q appears twice", n)
		}
		out[n] = m
	}
	return out, nil
}

// merge puts the subscribed resources of got into dst.
func merge[M any](dst, got map[string]M, subscribed []string) {
	for n, r := range got {
		if _, ok := slices.BinarySearch(subscribed, n); ok {
			dst[n] = r
		}
	}
}

// keep drops the entries of m not named.
func keep[M any](m map[string]M, names []string) {
	for n := range m {
		if _, ok := slices.BinarySearch(names, n); !ok {
			delete(m, n)
		}
	}
}
