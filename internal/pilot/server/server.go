// Package server is the control plane's xDS server: it serves Aggregated
// Discovery (SotW and delta) over go-control-plane's protos and gRPC
// service with its own stream handling (ads.go), one configuration per
// connected proxy keyed by its node id once the caller's client
// certificate proved its identity, debounces configuration changes and
// regenerates the connected proxies' configuration in parallel, pushing
// only endpoints when only endpoints changed.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// Defaults of Options.
const (
	DefaultDebounceAfter = 100 * time.Millisecond
	DefaultDebounceMax   = time.Second
)

// Discovery is what the server needs from service discovery
// (internal/pilot/discovery's Controller).
type Discovery interface {
	// Snapshot returns the current immutable PushContext.
	Snapshot() *model.PushContext
	// BuildProxy turns a node into a Proxy for the verified identity,
	// rejecting nodes that disagree with it.
	BuildProxy(node *corev3.Node, certNamespace, certServiceAccount string) (*model.Proxy, error)
	// ReportInvalid records an Istio object translation had to skip.
	ReportInvalid(kind, namespace, name, reason string)
}

// GenerateFunc translates a snapshot for one proxy (xds.Generate).
type GenerateFunc func(push *model.PushContext, proxy *model.Proxy) *xds.Resources

// GenerateEndpointsFunc translates the endpoints of some clusters for one
// proxy (xds.GenerateEndpoints).
type GenerateEndpointsFunc func(push *model.PushContext, proxy *model.Proxy, clusterNames []string) []*endpointv3.ClusterLoadAssignment

// Options configures a Server.
type Options struct {
	Discovery         Discovery
	Generate          GenerateFunc
	GenerateEndpoints GenerateEndpointsFunc
	// TrustDomain client certificates must belong to; default cluster.local.
	TrustDomain string
	// DebounceAfter is the quiet time after the last change before a push
	// (default 100ms); DebounceMax bounds how long changes may keep
	// postponing it (default 1s).
	DebounceAfter, DebounceMax time.Duration
	// Workers regenerate proxies in parallel; default GOMAXPROCS.
	Workers int
	// PlaintextNodeIdentity lets streams on a plaintext listener (15010)
	// identify themselves by their node metadata (NAMESPACE,
	// SERVICE_ACCOUNT) instead of a certificate. For local debugging only:
	// any client can then claim any identity. Streams over TLS always need
	// a verified client certificate.
	PlaintextNodeIdentity bool
	// Registry receives the metrics; nil for none.
	Registry prometheus.Registerer
	Log      *slog.Logger
}

// Change is one configuration change that needs a push.
type Change struct {
	// EndpointsOnly changes affect only the endpoints of Hostnames.
	EndpointsOnly bool
	Hostnames     []string
}

// Server serves ADS. Create it with New, register it on gRPC servers with
// Register, feed it changes with OnChange and run its push loop with Run.
type Server struct {
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	inFlight chan struct{} // responses sent and not yet answered (ads.go)

	mu      sync.Mutex
	streams map[streamKey]*stream
	nodes   map[string]*node // by node id

	pendingMu sync.Mutex
	pending   *batch
	notify    chan struct{}

	pushMu sync.Mutex // one push at a time
	// gen bounds concurrent generations (pushes and newly connected
	// proxies together) to Workers: each holds a full configuration in
	// memory while it is built.
	gen chan struct{}

	// seqMu pairs each PushContext with a sequence number so that a node
	// never replaces its configuration with one from an older snapshot.
	seqMu    sync.Mutex
	seq      uint64
	lastPush *model.PushContext

	// groups share one generated configuration among the proxies whose
	// translation inputs are the same (configKey): replicas of a workload.
	groupsMu sync.Mutex
	groups   map[string]*group
}

// batch is a set of debounced changes.
type batch struct {
	first, last time.Time
	full        bool
	hostnames   map[string]bool
}

// node is one node id's state: its proxy, the resources it was last
// generated, and its configuration as the streams send it.
type node struct {
	mu       sync.Mutex
	id       string
	coreNode *corev3.Node
	identity Identity
	proxy    *model.Proxy
	res      *xds.Resources
	seq      uint64 // of the snapshot the configuration was generated from
	cfg      atomic.Pointer[config]

	// refs and streams are guarded by Server.mu.
	refs    int
	streams map[*stream]struct{}
}

// snapshot returns the current PushContext and its sequence number.
func (s *Server) snapshot() (*model.PushContext, uint64) {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	push := s.opts.Discovery.Snapshot()
	// The same snapshot keeps its number, so that proxies connecting
	// between pushes share the configuration generated for their group.
	if push != s.lastPush || push == nil {
		s.seq++
		s.lastPush = push
	}
	return push, s.seq
}

// New returns a server.
func New(opts Options) (*Server, error) {
	if opts.Discovery == nil || opts.Generate == nil {
		return nil, errors.New("server needs Discovery and Generate")
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.DebounceAfter <= 0 {
		opts.DebounceAfter = DefaultDebounceAfter
	}
	if opts.DebounceMax <= 0 {
		opts.DebounceMax = DefaultDebounceMax
	}
	if opts.DebounceMax < opts.DebounceAfter {
		opts.DebounceMax = opts.DebounceAfter
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		log:      opts.Log,
		metrics:  m,
		streams:  map[streamKey]*stream{},
		nodes:    map[string]*node{},
		notify:   make(chan struct{}, 1),
		gen:      make(chan struct{}, opts.Workers),
		groups:   map[string]*group{},
		inFlight: make(chan struct{}, maxInFlight),
	}
	return s, nil
}

// Register serves ADS (SotW and delta) on gs; ctx bounds the xDS streams.
func (s *Server) Register(ctx context.Context, gs *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, adsService{s: s, ctx: ctx})
}

// OnChange queues a change for the next debounced push. It never blocks.
func (s *Server) OnChange(c Change) {
	now := time.Now()
	s.pendingMu.Lock()
	if s.pending == nil {
		s.pending = &batch{first: now, hostnames: map[string]bool{}}
	}
	s.pending.last = now
	if !c.EndpointsOnly {
		s.pending.full = true
	}
	for _, h := range c.Hostnames {
		s.pending.hostnames[h] = true
	}
	s.pendingMu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Run pushes debounced changes until ctx ends: a batch is pushed once no
// change arrived for DebounceAfter, or DebounceMax after its first change.
func (s *Server) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.notify:
		}
		for {
			s.pendingMu.Lock()
			b := s.pending
			var fire time.Time
			if b != nil {
				fire = b.last.Add(s.opts.DebounceAfter)
				if limit := b.first.Add(s.opts.DebounceMax); limit.Before(fire) {
					fire = limit
				}
			}
			s.pendingMu.Unlock()
			if b == nil {
				break
			}
			d := time.Until(fire)
			if d <= 0 {
				s.pendingMu.Lock()
				s.pending = nil
				s.pendingMu.Unlock()
				s.push(ctx, b)
				break
			}
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

// push regenerates every connected node for a batch.
func (s *Server) push(ctx context.Context, b *batch) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	push, seq := s.snapshot()
	if push == nil {
		return
	}
	s.mu.Lock()
	nodes := make([]*node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	work := make(chan *node)
	var wg sync.WaitGroup
	for i := 0; i < s.opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if b.full || s.opts.GenerateEndpoints == nil {
					s.generate(ctx, push, seq, n, true)
				} else {
					s.generateEndpoints(ctx, push, seq, n, b.hostnames)
				}
			}
		}()
	}
	for _, n := range nodes {
		work <- n
	}
	close(work)
	wg.Wait()
	s.metrics.convergence.Observe(time.Since(b.first).Seconds())
	if b.full {
		s.pruneGroups()
	}
	s.log.Debug("pushed", "proxies", len(nodes), "full", b.full, "hostnames", len(b.hostnames), "since", time.Since(b.first))
}

// generate builds and sets a node's full snapshot. With rebuild, the proxy
// is built again from its node (pod labels may have changed).
func (s *Server) generate(ctx context.Context, push *model.PushContext, seq uint64, n *node, rebuild bool) {
	s.gen <- struct{}{}
	defer func() { <-s.gen }()
	start := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seq > seq {
		return // already generated from a newer snapshot
	}
	n.seq = seq
	if rebuild {
		p, err := s.opts.Discovery.BuildProxy(n.coreNode, n.identity.Namespace, n.identity.ServiceAccount)
		if err != nil {
			s.log.Warn("rebuilding proxy failed; keeping the previous one", "proxy", n.id, "err", err)
		} else {
			n.proxy = p
		}
	}
	g := s.group(configKey(n.proxy))
	g.mu.Lock()
	if g.res == nil || g.seq < seq || (g.seq == seq && !g.full) {
		res, err := s.safeGenerate(push, n.proxy)
		if err != nil {
			g.mu.Unlock()
			s.metrics.internalErrors.Inc()
			s.log.Error("generating configuration", "proxy", n.id, "err", err)
			return
		}
		for _, sk := range res.Skipped {
			s.opts.Discovery.ReportInvalid(sk.Kind, sk.Namespace, sk.Name, sk.Reason)
		}
		if err := g.set(res, seq, allTypes); err != nil {
			g.mu.Unlock()
			s.metrics.internalErrors.Inc()
			s.log.Error("encoding resources", "proxy", n.id, "err", err)
			return
		}
		g.full = true
	}
	res, cfg := g.res, g.cfg
	g.mu.Unlock()
	s.use(n, res, cfg)
	s.metrics.pushTime.Observe(time.Since(start).Seconds())
}

// group is the configuration shared by the proxies of one configKey,
// generated from the snapshot numbered seq. full tells whether it was
// generated whole from that snapshot (rather than only its endpoints).
type group struct {
	mu       sync.Mutex
	seq      uint64
	full     bool
	res      *xds.Resources
	versions map[string]string
	cfg      *config
}

// set makes res the group's configuration: the types in changed are
// interned and hashed again, the others keep their versions. g.mu held.
func (g *group) set(res *xds.Resources, seq uint64, changed []string) error {
	todo := map[string]bool{}
	for _, t := range changed {
		todo[t] = true
	}
	for _, t := range allTypes {
		if g.versions[t] == "" {
			todo[t] = true
		}
	}
	versions, err := internResources(res, todo)
	if err != nil {
		return err
	}
	next := map[string]string{}
	for t, v := range g.versions {
		next[t] = v
	}
	for t, v := range versions {
		next[t] = v
	}
	cfg, err := newConfig(res, next, g.cfg)
	if err != nil {
		return err
	}
	g.res, g.versions, g.cfg, g.seq = res, next, cfg, seq
	return nil
}

// group returns the group of key, creating it.
func (s *Server) group(key string) *group {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	g := s.groups[key]
	if g == nil {
		g = &group{}
		s.groups[key] = g
	}
	return g
}

// pruneGroups forgets the groups no connected proxy belongs to.
func (s *Server) pruneGroups() {
	s.mu.Lock()
	used := map[string]bool{}
	for _, n := range s.nodes {
		if n.proxy != nil {
			used[configKey(n.proxy)] = true
		}
	}
	s.mu.Unlock()
	s.groupsMu.Lock()
	for k := range s.groups {
		if !used[k] {
			delete(s.groups, k)
		}
	}
	s.groupsMu.Unlock()
}

// use gives node n a group's configuration and wakes its streams.
// Callers hold n.mu.
func (s *Server) use(n *node, res *xds.Resources, cfg *config) {
	n.res = res
	n.cfg.Store(cfg)
	s.mu.Lock()
	streams := make([]*stream, 0, len(n.streams))
	for st := range n.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
}

func (s *Server) safeGenerate(push *model.PushContext, p *model.Proxy) (res *xds.Resources, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("translation panicked: %v", r)
		}
	}()
	res = s.opts.Generate(push, p)
	if res == nil {
		return nil, errors.New("translation returned nothing")
	}
	return res, nil
}

// generateEndpoints regenerates only the EDS clusters of hostnames, once
// per group.
func (s *Server) generateEndpoints(ctx context.Context, push *model.PushContext, seq uint64, n *node, hostnames map[string]bool) {
	s.gen <- struct{}{}
	defer func() { <-s.gen }()
	start := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.res == nil || n.seq > seq {
		return
	}
	n.seq = seq
	g := s.group(configKey(n.proxy))
	g.mu.Lock()
	if g.res == nil {
		g.mu.Unlock()
		return
	}
	if g.seq < seq {
		if !s.regenerateEndpoints(push, seq, g, n, hostnames) {
			g.mu.Unlock()
			return
		}
	}
	res, cfg := g.res, g.cfg
	g.mu.Unlock()
	if res == n.res {
		return // nothing changed for this group
	}
	s.use(n, res, cfg)
	s.metrics.pushTime.Observe(time.Since(start).Seconds())
}

// regenerateEndpoints updates a group's EDS clusters of hostnames from
// push, using n as the group's proxy; it reports whether anything was
// regenerated. g.mu held.
func (s *Server) regenerateEndpoints(push *model.PushContext, seq uint64, g *group, n *node, hostnames map[string]bool) bool {
	var names []string
	for _, c := range g.res.Clusters {
		if c.GetEdsClusterConfig() == nil {
			continue
		}
		_, _, _, host, err := xds.ParseClusterName(c.GetName())
		if err != nil || !hostnames[host] {
			continue
		}
		names = append(names, c.GetName())
	}
	if len(names) == 0 {
		g.seq = seq
		g.full = false
		return true
	}
	var cla []*endpointv3.ClusterLoadAssignment
	func() {
		defer func() {
			if r := recover(); r != nil {
				s.metrics.internalErrors.Inc()
				s.log.Error("generating endpoints panicked", "proxy", n.id, "panic", r)
				cla = nil
			}
		}()
		cla = s.opts.GenerateEndpoints(push, n.proxy, names)
	}()
	byName := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, e := range g.res.Endpoints {
		byName[e.GetClusterName()] = e
	}
	for _, name := range names {
		delete(byName, name)
	}
	for _, e := range cla {
		byName[e.GetClusterName()] = e
	}
	merged := make([]*endpointv3.ClusterLoadAssignment, 0, len(byName))
	for _, e := range byName {
		merged = append(merged, e)
	}
	sort.Slice(merged, func(i, j int) bool { return merged[i].GetClusterName() < merged[j].GetClusterName() })
	res := *g.res
	res.Endpoints = merged
	if err := g.set(&res, seq, []string{xds.EndpointType}); err != nil {
		s.metrics.internalErrors.Inc()
		s.log.Error("encoding endpoints", "proxy", n.id, "err", err)
		return false
	}
	g.full = false
	return true
}

var allTypes = []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType, xds.SecretType}

func resourceLists(r *xds.Resources) map[string][]proto.Message {
	out := map[string][]proto.Message{
		xds.ClusterType:  make([]proto.Message, 0, len(r.Clusters)),
		xds.EndpointType: make([]proto.Message, 0, len(r.Endpoints)),
		xds.ListenerType: make([]proto.Message, 0, len(r.Listeners)),
		xds.RouteType:    make([]proto.Message, 0, len(r.Routes)),
		xds.SecretType:   make([]proto.Message, 0, len(r.Secrets)),
	}
	for _, x := range r.Clusters {
		out[xds.ClusterType] = append(out[xds.ClusterType], x)
	}
	for _, x := range r.Endpoints {
		out[xds.EndpointType] = append(out[xds.EndpointType], x)
	}
	for _, x := range r.Listeners {
		out[xds.ListenerType] = append(out[xds.ListenerType], x)
	}
	for _, x := range r.Routes {
		out[xds.RouteType] = append(out[xds.RouteType], x)
	}
	for _, x := range r.Secrets {
		out[xds.SecretType] = append(out[xds.SecretType], x)
	}
	return out
}

// connect registers a stream's node after its identity was verified, and
// generates the node's first snapshot when it is new.
func (s *Server) connect(ctx context.Context, st *stream, cn *corev3.Node) error {
	if cn.GetId() == "" {
		return status.Error(codes.InvalidArgument, "the first request must carry a node with an id")
	}
	proxy, err := s.opts.Discovery.BuildProxy(cn, st.identity.Namespace, st.identity.ServiceAccount)
	if err != nil {
		s.log.Warn("refused xDS client", "node", cn.GetId(), "identity", st.identity.String(), "err", err)
		return status.Errorf(codes.PermissionDenied, "node %q refused for %s: %v", cn.GetId(), st.identity, err)
	}
	s.mu.Lock()
	n, ok := s.nodes[cn.GetId()]
	if ok && (n.identity.Namespace != st.identity.Namespace || n.identity.ServiceAccount != st.identity.ServiceAccount) {
		s.mu.Unlock()
		return status.Errorf(codes.PermissionDenied, "node %q is connected with another identity", cn.GetId())
	}
	if !ok {
		n = &node{id: cn.GetId(), coreNode: cn, identity: st.identity, proxy: proxy, streams: map[*stream]struct{}{}}
		s.nodes[n.id] = n
	}
	n.refs++
	n.streams[st] = struct{}{}
	st.node = n
	s.mu.Unlock()
	if !ok {
		if push, seq := s.snapshot(); push != nil {
			s.generate(ctx, push, seq, n, false)
		}
	}
	s.log.Info("xDS client connected", "proxy", n.id, "identity", st.identity.String(), "stream", st.key)
	return nil
}

// disconnect forgets a stream, and its node once no stream uses it.
func (s *Server) disconnect(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, st.key)
	s.metrics.connected.Set(float64(len(s.streams)))
	if st.node == nil {
		return
	}
	st.node.refs--
	delete(st.node.streams, st)
	s.log.Info("xDS client disconnected", "proxy", st.node.id, "stream", st.key)
	if st.node.refs > 0 || s.nodes[st.node.id] != st.node {
		return
	}
	delete(s.nodes, st.node.id)
}

// ConnectedProxies returns the node ids with at least one stream.
func (s *Server) ConnectedProxies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.nodes))
	for id := range s.nodes {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}
