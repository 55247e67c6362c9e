// Package upstream is the proxy's view of its clusters (CDS) and their
// endpoints (EDS): load balancing, connection pools, circuit breakers,
// outlier detection and TLS origination, following docs/xds.md.
//
// Build turns one config.Snapshot into a Set. Sets are immutable; the live
// state of a cluster (pools, counters, ejections) moves to the next Set
// when the cluster's configuration is unchanged, so an endpoint-only update
// keeps the connections of the endpoints that remain.
package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// HTTPProtocolOptionsName is the typed_extension_protocol_options key.
const HTTPProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Envoy's defaults.
const (
	defaultConnectTimeout   = 5 * time.Second
	defaultIdleTimeout      = time.Hour
	defaultThreshold        = 1024
	defaultMaxRetries       = 3
	defaultRingSize         = 1024
	defaultMaglevTableSize  = 65537
	defaultOutlierInterval  = 10 * time.Second
	defaultBaseEjectionTime = 30 * time.Second
	defaultMaxEjectionTime  = 300 * time.Second
)

// Protocol is how requests are sent to a cluster's endpoints.
type Protocol int

const (
	// HTTP1 is HTTP/1.1 with keep-alive pools (Envoy's default).
	HTTP1 Protocol = iota
	// HTTP2 is HTTP/2: over TLS when the cluster originates TLS, else h2c
	// with prior knowledge.
	HTTP2
	// Downstream follows the downstream request's protocol.
	Downstream
)

// ClusterInfo is the service a cluster stands for, from its
// filter_metadata.istio (docs/xds.md).
type ClusterInfo struct {
	ServiceHost, ServiceName, ServiceNamespace, Subset string
}

// Set is every cluster of one snapshot.
type Set struct {
	clusters map[string]*Cluster
	log      *slog.Logger
}

// Cluster is one CDS cluster with its endpoints.
type Cluster struct {
	name  string
	info  ClusterInfo
	cfg   *clusterConfig
	hosts []*Host      // every endpoint, usable or not, in EDS order
	dns   *dnsResolver // STRICT_DNS: the resolved hosts replace hosts
	// multiPriority: the endpoints span several priority levels.
	multiPriority bool
	lb            balancer
	state         *clusterState
	log           *slog.Logger
	now           func() time.Time
}

// clusterConfig is the parsed, immutable configuration of a cluster.
type clusterConfig struct {
	msg            *clusterv3.Cluster
	typ            clusterv3.Cluster_DiscoveryType
	connectTimeout time.Duration
	lbPolicy       clusterv3.Cluster_LbPolicy
	ringSize       int
	maglevSize     int
	maxConnections int64
	maxPending     int64
	maxRequests    int64
	maxRetries     int64
	outlier        *outlierConfig
	protocol       Protocol
	idleTimeout    time.Duration
	maxReqPerConn  uint32
	maxStreams     int           // http2 max_concurrent_streams per connection; 0: unlimited
	network        string        // tcp, tcp4 or tcp6
	panicThreshold float64       // percent; 0: never panic
	cleanup        time.Duration // ORIGINAL_DST cleanup_interval
	defaultSocket  *tlsSocket
	socketMatches  []socketMatch
	secretPrints   map[string][]byte // snapshot secrets the TLS config reads, serialized
}

// clusterState is the live state shared by the versions of a cluster whose
// configuration is unchanged.
type clusterState struct {
	active      atomic.Int64 // requests in flight
	connections atomic.Int64 // open upstream connections
	retries     atomic.Int64 // retries in flight
	rr          atomic.Uint64
	randMu      sync.Mutex
	rand        *rand.Rand

	// created starts the outlier detection interval ticks.
	created time.Time

	// ORIGINAL_DST hosts, created on demand and dropped when unused for
	// cleanup_interval.
	origMu    sync.Mutex
	origDst   map[netip.AddrPort]*hostState
	origSwept time.Time
	released  atomic.Bool
}

func (cs *clusterState) randN(n int) int {
	cs.randMu.Lock()
	defer cs.randMu.Unlock()
	return cs.rand.IntN(n)
}

// Get returns the named cluster, nil when unknown.
func (s *Set) Get(name string) *Cluster {
	if s == nil {
		return nil
	}
	return s.clusters[name]
}

// Names lists the clusters, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.clusters))
	for n := range s.clusters {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ClusterInfo describes the named cluster; ok is false when it is unknown.
func (s *Set) ClusterInfo(name string) (info ClusterInfo, ok bool) {
	c := s.Get(name)
	if c == nil {
		return ClusterInfo{}, false
	}
	return c.info, true
}

// DialTCP connects to an endpoint of the named cluster (see
// Cluster.DialTCP); originalDst is used by ORIGINAL_DST clusters.
func (s *Set) DialTCP(ctx context.Context, cluster string, originalDst netip.AddrPort) (net.Conn, *Host, error) {
	c := s.Get(cluster)
	if c == nil {
		return nil, nil, fmt.Errorf("%w: unknown cluster %q", ErrNoHealthyUpstream, cluster)
	}
	return c.DialTCP(ctx, RequestOptions{OriginalDst: originalDst, Attempt: 1})
}

// Name is the cluster name.
func (c *Cluster) Name() string { return c.name }

// Info is the service the cluster stands for.
func (c *Cluster) Info() ClusterInfo { return c.info }

// Hosts lists the cluster's endpoints (for ORIGINAL_DST, none).
func (c *Cluster) Hosts() []*Host { return c.allHosts() }

// allHosts is every endpoint of the cluster now (for STRICT_DNS, as last
// resolved).
func (c *Cluster) allHosts() []*Host {
	if c.dns != nil {
		return c.dns.current()
	}
	return c.hosts
}

// Protocol is the configured upstream protocol.
func (c *Cluster) Protocol() Protocol { return c.cfg.protocol }

// MaxRetries is the max_retries circuit breaker threshold.
func (c *Cluster) MaxRetries() int64 { return c.cfg.maxRetries }

// AcquireRetry reserves one of the cluster's max_retries concurrent
// retries; ok is false when the breaker is open (the caller must not
// retry). release must be called when the retry attempt is done.
func (c *Cluster) AcquireRetry() (release func(), ok bool) {
	if c.state.retries.Add(1) > c.cfg.maxRetries {
		c.state.retries.Add(-1)
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { c.state.retries.Add(-1) }) }, true
}

// Build builds the clusters of snap. Clusters of prev whose configuration
// (and the secrets they read) did not change keep their live state; their
// endpoints keep their pools when the address and metadata are unchanged.
// Any unsupported or invalid cluster is an error naming it.
func Build(snap *config.Snapshot, prev *Set, secrets config.Secrets, log *slog.Logger) (*Set, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	set := &Set{clusters: make(map[string]*Cluster, len(snap.Clusters)), log: log}
	names := make([]string, 0, len(snap.Clusters))
	for n := range snap.Clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		msg := snap.Clusters[name]
		if msg.GetName() != name {
			return nil, fmt.Errorf("cluster %q: resource name differs from cluster name %q", name, msg.GetName())
		}
		var old *Cluster
		if prev != nil {
			old = prev.clusters[name]
		}
		c, err := buildCluster(msg, snap, old, secrets, log)
		if err != nil {
			set.stopResolvers(nil)
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		set.clusters[name] = c
	}
	return set, nil
}

func buildCluster(msg *clusterv3.Cluster, snap *config.Snapshot, old *Cluster, secrets config.Secrets, log *slog.Logger) (*Cluster, error) {
	var cfg *clusterConfig
	var state *clusterState
	// The configuration without STATIC/DNS endpoints: an endpoint-only
	// change keeps the cluster's state.
	cfgMsg := proto.Clone(msg).(*clusterv3.Cluster)
	cfgMsg.LoadAssignment = nil
	if old != nil && proto.Equal(old.cfg.msg, cfgMsg) && sameSecrets(old.cfg, snap) {
		cfg = old.cfg
		state = old.state
	} else {
		var err error
		cfg, err = parseCluster(msg, snap, secrets)
		if err != nil {
			return nil, err
		}
		cfg.msg = cfgMsg
		state = &clusterState{rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), origDst: map[netip.AddrPort]*hostState{}, created: time.Now()}
		old = nil
	}
	c := &Cluster{
		name:  msg.GetName(),
		info:  clusterInfo(msg.GetMetadata()),
		cfg:   cfg,
		state: state,
		log:   log.With("cluster", msg.GetName()),
		now:   time.Now,
	}
	cla, err := assignment(msg, snap)
	if err != nil {
		return nil, err
	}
	oldHosts := map[string]*Host{}
	if old != nil {
		for _, h := range old.allHosts() {
			oldHosts[hostKey(h)] = h
		}
	}
	for li, loc := range cla.GetEndpoints() {
		if loc.GetLedsClusterLocalityConfig() != nil || loc.GetLoadBalancerEndpoints() != nil {
			return nil, fmt.Errorf("endpoints: locality %d: only lb_endpoints are supported", li)
		}
		for ei, le := range loc.GetLbEndpoints() {
			h, err := newHost(cfg, le)
			if err != nil {
				return nil, fmt.Errorf("endpoints: locality %d endpoint %d: %w", li, ei, err)
			}
			h.Priority = loc.GetPriority()
			if o := oldHosts[hostKey(h)]; o != nil {
				h.state = o.state
				delete(oldHosts, hostKey(h))
			} else {
				h.state = &hostState{}
			}
			h.state.ensurePool(c, h)
			c.hosts = append(c.hosts, h)
		}
	}
	c.multiPriority = !allSamePriority(c.hosts)
	c.lb = newBalancer(cfg)
	if cfg.typ == clusterv3.Cluster_STRICT_DNS {
		var prev []*Host
		if old != nil {
			prev = old.allHosts()
		}
		c.dns = newDNSResolver(c, msg, c.hosts, prev)
	}
	return c, nil
}

func hostKey(h *Host) string {
	return h.Address() + "|" + fmt.Sprint(h.socket != nil) + "|" + socketID(h.socket)
}

func assignment(msg *clusterv3.Cluster, snap *config.Snapshot) (*endpointv3.ClusterLoadAssignment, error) {
	switch msg.GetType() {
	case clusterv3.Cluster_EDS:
		name := msg.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = msg.GetName()
		}
		return snap.Endpoints[name], nil // nil: no endpoints yet
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		return msg.GetLoadAssignment(), nil
	case clusterv3.Cluster_ORIGINAL_DST:
		if len(msg.GetLoadAssignment().GetEndpoints()) > 0 {
			return nil, fmt.Errorf("ORIGINAL_DST cluster must not have a load_assignment")
		}
		return nil, nil
	}
	return nil, fmt.Errorf("discovery type %v is not supported", msg.GetType())
}

func newHost(cfg *clusterConfig, le *endpointv3.LbEndpoint) (*Host, error) {
	if le.GetEndpointName() != "" {
		return nil, fmt.Errorf("named endpoints are not supported")
	}
	sa := le.GetEndpoint().GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("endpoint address must be a socket_address")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, fmt.Errorf("endpoint %s: protocol %v is not supported", sa.GetAddress(), sa.GetProtocol())
	}
	if sa.GetNamedPort() != "" || sa.GetResolverName() != "" {
		return nil, fmt.Errorf("endpoint %s: named ports and resolvers are not supported", sa.GetAddress())
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return nil, fmt.Errorf("endpoint %s: port %d out of range", sa.GetAddress(), port)
	}
	h := &Host{Port: uint16(port), Weight: 1, Metadata: metadataMap(le.GetMetadata())}
	if w := le.GetLoadBalancingWeight(); w != nil && w.GetValue() > 0 {
		h.Weight = w.GetValue()
	}
	switch le.GetHealthStatus() {
	case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY, corev3.HealthStatus_DEGRADED:
		h.healthy = true
	}
	if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil {
		h.Addr = netip.AddrPortFrom(ip.Unmap(), uint16(port))
	} else {
		if cfg.typ != clusterv3.Cluster_STRICT_DNS && cfg.typ != clusterv3.Cluster_LOGICAL_DNS {
			return nil, fmt.Errorf("endpoint address %q is not an IP address", sa.GetAddress())
		}
		h.Hostname = sa.GetAddress()
	}
	sock, err := cfg.socketFor(h.Metadata)
	if err != nil {
		return nil, err
	}
	h.socket = sock
	h.freeze()
	return h, nil
}

func metadataMap(md *corev3.Metadata) map[string]map[string]any {
	if md == nil || len(md.GetFilterMetadata()) == 0 {
		return nil
	}
	out := make(map[string]map[string]any, len(md.GetFilterMetadata()))
	for k, v := range md.GetFilterMetadata() {
		out[k] = v.AsMap()
	}
	return out
}

func clusterInfo(md *corev3.Metadata) ClusterInfo {
	var info ClusterInfo
	istio := md.GetFilterMetadata()["istio"]
	if istio == nil {
		return info
	}
	m := istio.AsMap()
	info.Subset, _ = m["subset"].(string)
	if svcs, ok := m["services"].([]any); ok && len(svcs) > 0 {
		if s, ok := svcs[0].(map[string]any); ok {
			info.ServiceHost, _ = s["host"].(string)
			info.ServiceName, _ = s["name"].(string)
			info.ServiceNamespace, _ = s["namespace"].(string)
		}
	}
	return info
}

func parseCluster(msg *clusterv3.Cluster, snap *config.Snapshot, secrets config.Secrets) (*clusterConfig, error) {
	cfg := &clusterConfig{
		msg:            msg,
		typ:            msg.GetType(),
		connectTimeout: defaultConnectTimeout,
		lbPolicy:       msg.GetLbPolicy(),
		ringSize:       defaultRingSize,
		maglevSize:     defaultMaglevTableSize,
		maxConnections: defaultThreshold,
		maxPending:     defaultThreshold,
		maxRequests:    defaultThreshold,
		maxRetries:     defaultMaxRetries,
		idleTimeout:    defaultIdleTimeout,
		network:        "tcp",
		cleanup:        5 * time.Second,
	}
	if d := msg.GetCleanupInterval(); d != nil && d.AsDuration() > 0 {
		cfg.cleanup = d.AsDuration()
	}
	if msg.GetClusterType() != nil {
		return nil, fmt.Errorf("custom cluster_type %q is not supported", msg.GetClusterType().GetName())
	}
	switch cfg.typ {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_EDS, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS, clusterv3.Cluster_ORIGINAL_DST:
	default:
		return nil, fmt.Errorf("discovery type %v is not supported", cfg.typ)
	}
	if cfg.typ == clusterv3.Cluster_ORIGINAL_DST && cfg.lbPolicy != clusterv3.Cluster_CLUSTER_PROVIDED {
		// Envoy requires CLUSTER_PROVIDED; ROUND_ROBIN (0) is what an unset
		// field reads as, accept it too.
		if cfg.lbPolicy != clusterv3.Cluster_ROUND_ROBIN {
			return nil, fmt.Errorf("ORIGINAL_DST cluster needs lb_policy CLUSTER_PROVIDED, got %v", cfg.lbPolicy)
		}
	}
	if cfg.typ == clusterv3.Cluster_EDS {
		if ec := msg.GetEdsClusterConfig().GetEdsConfig(); ec != nil && ec.GetAds() == nil {
			return nil, fmt.Errorf("eds_config must be ADS")
		}
	}
	if d := msg.GetConnectTimeout(); d != nil {
		cfg.connectTimeout = d.AsDuration()
		if cfg.connectTimeout <= 0 {
			return nil, fmt.Errorf("connect_timeout must be positive")
		}
	}
	switch msg.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		cfg.network = "tcp4"
	case clusterv3.Cluster_V6_ONLY:
		cfg.network = "tcp6"
	}
	switch cfg.lbPolicy {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RANDOM, clusterv3.Cluster_CLUSTER_PROVIDED:
	case clusterv3.Cluster_RING_HASH:
		if rh := msg.GetRingHashLbConfig(); rh != nil {
			if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
				return nil, fmt.Errorf("ring hash function %v is not supported", rh.GetHashFunction())
			}
			if v := rh.GetMinimumRingSize(); v != nil && v.GetValue() > 0 {
				if v.GetValue() > 1<<23 {
					return nil, fmt.Errorf("minimum_ring_size %d is too large", v.GetValue())
				}
				cfg.ringSize = int(v.GetValue())
			}
		}
	case clusterv3.Cluster_MAGLEV:
		if ml := msg.GetMaglevLbConfig(); ml != nil && ml.GetTableSize() != nil {
			n := ml.GetTableSize().GetValue()
			if !isPrime(n) || n > 5000011 {
				return nil, fmt.Errorf("maglev table_size %d must be a prime up to 5000011", n)
			}
			cfg.maglevSize = int(n)
		}
	default:
		return nil, fmt.Errorf("lb_policy %v is not supported", cfg.lbPolicy)
	}
	if cl := msg.GetCommonLbConfig(); cl != nil {
		// Envoy's default is 50%, but docs/xds.md says the proxy skips
		// unhealthy endpoints, so panic routing happens only when the
		// control plane asks for it.
		if p := cl.GetHealthyPanicThreshold(); p != nil {
			cfg.panicThreshold = p.GetValue()
		}
		if cl.GetZoneAwareLbConfig() != nil || cl.GetConsistentHashingLbConfig() != nil || cl.GetOverrideHostStatus() != nil {
			return nil, fmt.Errorf("common_lb_config: only healthy_panic_threshold and locality weights are supported")
		}
	}
	if msg.GetLbSubsetConfig() != nil {
		return nil, fmt.Errorf("lb_subset_config is not supported")
	}
	if msg.GetLoadBalancingPolicy() != nil {
		return nil, fmt.Errorf("load_balancing_policy is not supported")
	}
	if len(msg.GetHealthChecks()) > 0 {
		return nil, fmt.Errorf("active health_checks are not supported")
	}
	if len(msg.GetFilters()) > 0 {
		return nil, fmt.Errorf("upstream network filters are not supported")
	}
	if msg.GetUpstreamBindConfig() != nil {
		return nil, fmt.Errorf("upstream_bind_config is not supported")
	}
	if msg.GetHttp2ProtocolOptions() != nil {
		cfg.protocol = HTTP2 // deprecated field, same meaning as explicit http2
	}
	if err := parseCircuitBreakers(cfg, msg.GetCircuitBreakers()); err != nil {
		return nil, err
	}
	od, err := parseOutlier(msg.GetOutlierDetection())
	if err != nil {
		return nil, err
	}
	cfg.outlier = od
	for k, v := range msg.GetTypedExtensionProtocolOptions() {
		if k != HTTPProtocolOptionsName {
			return nil, fmt.Errorf("typed_extension_protocol_options %q is not supported", k)
		}
		var opts httpv3.HttpProtocolOptions
		if err := v.UnmarshalTo(&opts); err != nil {
			return nil, fmt.Errorf("typed_extension_protocol_options %q: %w", k, err)
		}
		if err := parseHTTPOptions(cfg, &opts); err != nil {
			return nil, err
		}
	}
	if err := parseSockets(cfg, msg, snap, secrets); err != nil {
		return nil, err
	}
	return cfg, nil
}

func parseCircuitBreakers(cfg *clusterConfig, cb *clusterv3.CircuitBreakers) error {
	if cb == nil {
		return nil
	}
	if len(cb.GetPerHostThresholds()) > 0 {
		return fmt.Errorf("circuit_breakers.per_host_thresholds is not supported")
	}
	for _, t := range cb.GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue // only DEFAULT priority traffic exists here
		}
		if t.GetRetryBudget() != nil {
			return fmt.Errorf("circuit_breakers retry_budget is not supported")
		}
		set := func(dst *int64, v interface{ GetValue() uint32 }, present bool) {
			if present {
				*dst = int64(v.GetValue())
			}
		}
		set(&cfg.maxConnections, t.GetMaxConnections(), t.GetMaxConnections() != nil)
		set(&cfg.maxPending, t.GetMaxPendingRequests(), t.GetMaxPendingRequests() != nil)
		set(&cfg.maxRequests, t.GetMaxRequests(), t.GetMaxRequests() != nil)
		set(&cfg.maxRetries, t.GetMaxRetries(), t.GetMaxRetries() != nil)
	}
	return nil
}

func parseHTTPOptions(cfg *clusterConfig, o *httpv3.HttpProtocolOptions) error {
	if len(o.GetHttpFilters()) > 0 {
		return fmt.Errorf("upstream http_filters are not supported")
	}
	if o.GetOutlierDetection() != nil || len(o.GetRequestMirrorPolicies()) > 0 || len(o.GetHashPolicy()) > 0 || o.GetRetryPolicy() != nil {
		return fmt.Errorf("cluster-level outlier/mirror/hash/retry policies in HttpProtocolOptions are not supported")
	}
	if c := o.GetCommonHttpProtocolOptions(); c != nil {
		if d := c.GetIdleTimeout(); d != nil {
			cfg.idleTimeout = d.AsDuration()
		}
		if v := c.GetMaxRequestsPerConnection(); v != nil {
			cfg.maxReqPerConn = v.GetValue()
		}
		if c.GetMaxConnectionDuration() != nil || c.GetMaxStreamDuration() != nil {
			return fmt.Errorf("max_connection_duration and max_stream_duration are not supported on clusters")
		}
	}
	switch pc := o.GetUpstreamProtocolOptions().(type) {
	case nil:
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		switch h := pc.ExplicitHttpConfig.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			cfg.protocol = HTTP1
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			cfg.protocol = HTTP2
			cfg.maxStreams = int(h.Http2ProtocolOptions.GetMaxConcurrentStreams().GetValue())
		default:
			return fmt.Errorf("explicit_http_config: only HTTP/1.1 and HTTP/2 are supported")
		}
	case *httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig:
		if pc.UseDownstreamProtocolConfig.GetHttp3ProtocolOptions() != nil {
			return fmt.Errorf("use_downstream_protocol_config: HTTP/3 is not supported")
		}
		cfg.protocol = Downstream
		cfg.maxStreams = int(pc.UseDownstreamProtocolConfig.GetHttp2ProtocolOptions().GetMaxConcurrentStreams().GetValue())
	default:
		return fmt.Errorf("upstream protocol options %T are not supported", pc)
	}
	return nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for i := uint64(2); i*i <= n; i++ {
		if n%i == 0 {
			return false
		}
	}
	return true
}

// stopResolvers ends the DNS refresh of the clusters next does not share.
func (s *Set) stopResolvers(next *Set) {
	for name, c := range s.clusters {
		if c.dns != nil && (next == nil || next.clusters[name] != c) {
			c.dns.close()
		}
	}
}

// Release is called on the old set once next replaced it: it closes the
// idle connections of hosts next did not take over, and keeps closing
// them as in-flight requests finish.
func (s *Set) Release(next *Set) {
	if s == nil {
		return
	}
	kept := map[*hostState]bool{}
	keptClusters := map[*clusterState]bool{}
	if next != nil {
		for _, c := range next.clusters {
			keptClusters[c.state] = true
			for _, h := range c.allHosts() {
				kept[h.state] = true
			}
		}
	}
	s.stopResolvers(next)
	var drop []*hostState
	for _, c := range s.clusters {
		for _, h := range c.allHosts() {
			if !kept[h.state] {
				drop = append(drop, h.state)
				kept[h.state] = true // once
			}
		}
		if !keptClusters[c.state] && c.state.released.CompareAndSwap(false, true) {
			c.state.origMu.Lock()
			for _, hs := range c.state.origDst {
				drop = append(drop, hs)
			}
			c.state.origMu.Unlock()
		}
	}
	if len(drop) == 0 {
		return
	}
	for _, hs := range drop {
		hs.pool.closeIdle()
	}
	go func() {
		// Connections busy at release go idle later: close them then.
		for range 120 {
			busy := false
			for _, hs := range drop {
				hs.pool.closeIdle()
				if hs.active.Load() > 0 {
					busy = true
				}
			}
			if !busy {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
}
