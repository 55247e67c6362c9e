package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestBuildRejectsUnsupported(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *clusterv3.Cluster)
		want   string
	}{
		{"lb subset", func(c *clusterv3.Cluster) { c.LbSubsetConfig = &clusterv3.Cluster_LbSubsetConfig{} }, "lb_subset_config"},
		{"health checks", func(c *clusterv3.Cluster) { c.HealthChecks = []*corev3.HealthCheck{{}} }, "health_checks"},
		{"lb policy", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG }, "lb_policy"},
		{"unknown socket", func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.alts"}
		}, "not supported"},
		{"unknown protocol options", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"x.y": {}}
		}, "typed_extension_protocol_options"},
		{"hostname in STATIC", func(c *clusterv3.Cluster) {
			c.LoadAssignment = cla(c.Name, lbEndpoint("example.com:80", nil))
		}, "not an IP"},
		{"success rate", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(100)}
		}, "success rate"},
		{"SAN without CA", func(c *clusterv3.Cluster) {
			c.TransportSocket = tlsSocketOf(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact("spiffe://x")}},
				}},
			}})
		}, "trusted CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := staticCluster("outbound|80||bad.default.svc.cluster.local", "127.0.0.1:1")
			tc.mutate(c)
			_, err := Build(snapshot(c), nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), c.Name) {
				t.Fatalf("error = %v, want one naming the cluster and %q", err, tc.want)
			}
		})
	}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func tlsSocketOf(t testing.TB, ctx *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: TLSSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

func TestEDSAndInfo(t *testing.T) {
	b := backend(t, "a", nil)
	md, _ := structpb.NewStruct(map[string]any{"services": []any{map[string]any{"host": "r.default.svc.cluster.local", "name": "r", "namespace": "default"}}, "subset": "v1"})
	c := &clusterv3.Cluster{
		Name:                 "outbound|80|v1|r.default.svc.cluster.local",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{ServiceName: "svc-endpoints"},
		Metadata:             &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": md}},
	}
	snap := snapshot(c)
	snap.Endpoints["svc-endpoints"] = cla("svc-endpoints",
		lbEndpoint(addrOf(b), map[string]map[string]any{"istio": {"workload": "r-v1;default;r;v1;Kubernetes"}}))
	set := mustBuild(t, snap, nil, nil)
	cl := set.Get(c.Name)
	if got := cl.Info(); got != (ClusterInfo{ServiceHost: "r.default.svc.cluster.local", ServiceName: "r", ServiceNamespace: "default", Subset: "v1"}) {
		t.Errorf("info = %+v", got)
	}
	resp, h, err := get(t, cl, RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if name, ns, canon, rev := h.Workload(); name != "r-v1" || ns != "default" || canon != "r" || rev != "v1" || h.WorkloadCluster() != "Kubernetes" {
		t.Errorf("workload = %s %s %s %s", name, ns, canon, rev)
	}
	if set.Get("nope") != nil {
		t.Error("unknown cluster is not nil")
	}
}

func TestUnhealthyEndpointsSkipped(t *testing.T) {
	good := backend(t, "good", nil)
	bad := backend(t, "bad", nil)
	c := staticCluster("c", addrOf(good), addrOf(bad))
	c.LoadAssignment.Endpoints[0].LbEndpoints[1].HealthStatus = corev3.HealthStatus_UNHEALTHY
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	for range 10 {
		resp, _, err := get(t, cl, RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Backend") != "good" {
			t.Fatal("request went to the unhealthy endpoint")
		}
	}
	c.LoadAssignment.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_DRAINING
	cl = mustBuild(t, snapshot(c), nil, nil).Get("c")
	if _, _, err := get(t, cl, RequestOptions{}); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("err = %v, want ErrNoHealthyUpstream", err)
	}
	// With a panic threshold, too few healthy hosts means all hosts serve.
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 50}}
	cl = mustBuild(t, snapshot(c), nil, nil).Get("c")
	if resp, _, err := get(t, cl, RequestOptions{}); err != nil {
		t.Fatalf("panic mode: %v", err)
	} else {
		resp.Body.Close()
	}
}

func TestLoadBalancing(t *testing.T) {
	var addrs []string
	for i := range 4 {
		addrs = append(addrs, addrOf(backend(t, fmt.Sprint(i), nil)))
	}
	count := func(cl *Cluster, n int, opts func(i int) RequestOptions) map[string]int {
		out := map[string]int{}
		for i := range n {
			resp, _, err := get(t, cl, opts(i))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			out[resp.Header.Get("X-Backend")]++
		}
		return out
	}
	noOpts := func(int) RequestOptions { return RequestOptions{} }
	t.Run("round robin is exact", func(t *testing.T) {
		cl := mustBuild(t, snapshot(staticCluster("c", addrs...)), nil, nil).Get("c")
		got := count(cl, 40, noOpts)
		for i := range 4 {
			if got[fmt.Sprint(i)] != 10 {
				t.Fatalf("distribution %v, want 10 each", got)
			}
		}
	})
	t.Run("weighted round robin", func(t *testing.T) {
		c := staticCluster("c", addrs[0], addrs[1])
		c.LoadAssignment.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(3)
		cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
		got := count(cl, 40, noOpts)
		if got["0"] != 30 || got["1"] != 10 {
			t.Fatalf("distribution %v, want 30/10", got)
		}
	})
	t.Run("random reaches every host", func(t *testing.T) {
		c := staticCluster("c", addrs...)
		c.LbPolicy = clusterv3.Cluster_RANDOM
		got := count(mustBuild(t, snapshot(c), nil, nil).Get("c"), 200, noOpts)
		for i := range 4 {
			if got[fmt.Sprint(i)] < 20 {
				t.Fatalf("distribution %v is far from uniform", got)
			}
		}
	})
	t.Run("least request avoids the busy host", func(t *testing.T) {
		c := staticCluster("c", addrs[0], addrs[1])
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
		cl.hosts[0].state.active.Add(100) // host 0 looks busy
		defer cl.hosts[0].state.active.Add(-100)
		got := count(cl, 400, noOpts)
		// P2C picks host 0 only when both choices are host 0 (1/4):
		// 300 of 400 expected, and fewer than 260 about once in 10^5.
		if got["1"] < 260 {
			t.Fatalf("distribution %v, want most requests on the idle host", got)
		}
	})
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String()+" is sticky and spreads keys", func(t *testing.T) {
			c := staticCluster("c", addrs...)
			c.LbPolicy = policy
			cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
			byKey := func(i int) RequestOptions {
				return RequestOptions{HashKey: HashString(fmt.Sprint("user-", i%20)), HasHash: true}
			}
			seen := map[int]string{}
			spread := map[string]bool{}
			for i := range 60 {
				resp, _, err := get(t, cl, byKey(i))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				b := resp.Header.Get("X-Backend")
				if prev, ok := seen[i%20]; ok && prev != b {
					t.Fatalf("key %d moved from %s to %s", i%20, prev, b)
				}
				seen[i%20] = b
				spread[b] = true
			}
			if len(spread) < 3 {
				t.Fatalf("20 keys landed on %d hosts", len(spread))
			}
			// Removing one host keeps the keys of the other hosts (mostly) in place.
			c2 := staticCluster("c", addrs[:3]...)
			c2.LbPolicy = policy
			cl2 := mustBuild(t, snapshot(c2), nil, nil).Get("c")
			moved, kept := 0, 0
			for k, b := range seen {
				if b == "3" {
					continue
				}
				kept++
				resp, _, _ := get(t, cl2, byKey(k))
				resp.Body.Close()
				if resp.Header.Get("X-Backend") != b {
					moved++
				}
			}
			// Each host's share grows from 1/4 to 1/3, so some keys move,
			// but most stay (a modulo hash would move about two thirds).
			if moved*2 > kept {
				t.Fatalf("%d of %d keys of remaining hosts moved", moved, kept)
			}
		})
	}
}

func TestStateCarriedAcrossBuilds(t *testing.T) {
	a, b := backend(t, "a", nil), backend(t, "b", nil)
	c := staticCluster("c", addrOf(a), addrOf(b))
	s1 := mustBuild(t, snapshot(c), nil, nil)
	resp, _, _ := get(t, s1.Get("c"), RequestOptions{})
	resp.Body.Close()
	// Endpoint-only change: the surviving host keeps its state (pool).
	c2 := staticCluster("c", addrOf(a))
	s2 := mustBuild(t, snapshot(c2), s1, nil)
	if s2.Get("c").state != s1.Get("c").state {
		t.Error("cluster state not carried over an endpoint change")
	}
	if s2.Get("c").hosts[0].state != s1.Get("c").hosts[0].state {
		t.Error("surviving host lost its pool")
	}
	s1.Release(s2)
	// Config change: fresh state.
	c3 := staticCluster("c", addrOf(a))
	c3.LbPolicy = clusterv3.Cluster_RANDOM
	s3 := mustBuild(t, snapshot(c3), s2, nil)
	if s3.Get("c").state == s2.Get("c").state {
		t.Error("state carried over a config change")
	}
}

func TestCircuitBreakerOverflow(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	b := backend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	c := staticCluster("c", addrOf(b))
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1), MaxRequests: wrapperspb.UInt32(100), MaxRetries: wrapperspb.UInt32(1),
	}}}
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	var wg sync.WaitGroup
	for range 2 { // one on the connection, one pending
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _, err := get(t, cl, RequestOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
	}
	<-entered
	// The third concurrent request overflows.
	waitFor(t, func() bool { return cl.state.active.Load() == 2 })
	if _, _, err := get(t, cl, RequestOptions{}); !errors.Is(err, ErrOverflow) {
		t.Fatalf("err = %v, want ErrOverflow", err)
	}
	close(release)
	wg.Wait()
	if resp, _, err := get(t, cl, RequestOptions{}); err != nil {
		t.Fatalf("after the burst: %v", err)
	} else {
		resp.Body.Close()
	}
	r1, ok1 := cl.AcquireRetry()
	_, ok2 := cl.AcquireRetry()
	if !ok1 || ok2 {
		t.Fatalf("max_retries 1: got %v %v", ok1, ok2)
	}
	r1()
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	good := backend(t, "good", nil)
	bad := backend(t, "bad", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	c := staticCluster("c", addrOf(good), addrOf(bad))
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(2),
		Interval:           durationpb.New(50 * time.Millisecond),
		BaseEjectionTime:   durationpb.New(300 * time.Millisecond),
		MaxEjectionPercent: wrapperspb.UInt32(100),
	}
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	now := time.Now()
	cl.now = func() time.Time { return now }
	hit := func() string {
		resp, _, err := get(t, cl, RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	bads := 0
	for range 4 { // round robin: 2 requests hit "bad"
		if hit() == "bad" {
			bads++
		}
	}
	if bads != 2 {
		t.Fatalf("bad host got %d of 4 requests", bads)
	}
	for range 10 {
		if hit() == "bad" {
			t.Fatal("ejected host still receives requests")
		}
	}
	now = now.Add(351 * time.Millisecond) // base_ejection_time, then the next interval tick
	sawBad := false
	for range 4 {
		if hit() == "bad" {
			sawBad = true
		}
	}
	if !sawBad {
		t.Fatal("host did not return after base_ejection_time and an interval")
	}
	// Ejected again right away: twice as long this time.
	for range 4 {
		hit()
	}
	if !cl.hosts[1].Ejected(now) {
		t.Fatal("host not ejected again")
	}
	now = now.Add(400 * time.Millisecond)
	if !cl.hosts[1].Ejected(now) {
		t.Fatal("second ejection did not last 2 × base_ejection_time")
	}
	now = now.Add(251 * time.Millisecond)
	if cl.hosts[1].Ejected(now) {
		t.Fatal("host still ejected after 2 × base_ejection_time")
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	bad1 := backend(t, "b1", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	bad2 := backend(t, "b2", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	c := staticCluster("c", addrOf(bad1), addrOf(bad2))
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(0),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(1),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		MaxEjectionPercent:                 wrapperspb.UInt32(50),
	}
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	for range 6 {
		resp, _, err := get(t, cl, RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	now := time.Now()
	if e := btoi(cl.hosts[0].Ejected(now)) + btoi(cl.hosts[1].Ejected(now)); e != 1 {
		t.Fatalf("%d hosts ejected, want 1 (max_ejection_percent 50)", e)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestConnectFailure(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	cl := mustBuild(t, snapshot(staticCluster("c", addr)), nil, nil).Get("c")
	_, h, err := get(t, cl, RequestOptions{})
	var ce *ConnectError
	if !errors.As(err, &ce) || h == nil {
		t.Fatalf("err = %v, want *ConnectError with the host", err)
	}
	if _, _, err := cl.DialTCP(context.Background(), RequestOptions{}); !errors.As(err, &ce) {
		t.Fatalf("DialTCP err = %v", err)
	}
}

func TestResetBeforeResponse(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 1024)
			c.Read(buf)
			c.Close()
		}
	}()
	cl := mustBuild(t, snapshot(staticCluster("c", l.Addr().String())), nil, nil).Get("c")
	req, _ := http.NewRequest("POST", "http://svc/", strings.NewReader("x"))
	_, _, err := cl.RoundTrip(req, RequestOptions{})
	if !errors.Is(err, ErrUpstreamReset) {
		t.Fatalf("err = %v, want ErrUpstreamReset", err)
	}
}

func http2Options(t testing.TB, downstream bool) map[string]*anypb.Any {
	o := &httpv3.HttpProtocolOptions{}
	if downstream {
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{}}
	} else {
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	}
	a, err := anypb.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{HTTPProtocolOptionsName: a}
}

func TestProtocols(t *testing.T) {
	proto := func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Proto", r.Proto) }
	h2cSrv := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(proto), &http2.Server{}))
	defer h2cSrv.Close()
	t.Run("explicit h2c", func(t *testing.T) {
		c := staticCluster("c", addrOf(h2cSrv))
		c.TypedExtensionProtocolOptions = http2Options(t, false)
		resp, _, err := get(t, mustBuild(t, snapshot(c), nil, nil).Get("c"), RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Proto") != "HTTP/2.0" {
			t.Fatalf("upstream saw %s", resp.Header.Get("X-Proto"))
		}
	})
	t.Run("default HTTP/1.1 keeps connections alive", func(t *testing.T) {
		conns := 0
		var mu sync.Mutex
		srv := httptest.NewUnstartedServer(http.HandlerFunc(proto))
		srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				mu.Lock()
				conns++
				mu.Unlock()
			}
		}
		srv.Start()
		defer srv.Close()
		cl := mustBuild(t, snapshot(staticCluster("c", addrOf(srv))), nil, nil).Get("c")
		for range 5 {
			resp, _, err := get(t, cl, RequestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Header.Get("X-Proto") != "HTTP/1.1" {
				t.Fatalf("upstream saw %s", resp.Header.Get("X-Proto"))
			}
		}
		if conns != 1 {
			t.Fatalf("%d connections for 5 sequential requests", conns)
		}
	})
	t.Run("max_requests_per_connection", func(t *testing.T) {
		var mu sync.Mutex
		conns := 0
		srv := httptest.NewUnstartedServer(http.HandlerFunc(proto))
		srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				mu.Lock()
				conns++
				mu.Unlock()
			}
		}
		srv.Start()
		defer srv.Close()
		c := staticCluster("c", addrOf(srv))
		a, _ := anypb.New(&httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)}})
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsName: a}
		cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
		for range 6 {
			resp, _, err := get(t, cl, RequestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		if conns != 3 {
			t.Fatalf("%d connections for 6 requests at 2 per connection", conns)
		}
	})
	t.Run("max_concurrent_streams opens more connections", func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		peers := map[string]bool{}
		srv := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			peers[r.RemoteAddr] = true
			mu.Unlock()
			<-release
		}), &http2.Server{}))
		defer srv.Close()
		c := staticCluster("c", addrOf(srv))
		o := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(2)}},
		}}}
		a, _ := anypb.New(o)
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsName: a}
		cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _, err := get(t, cl, RequestOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}()
		}
		waitFor(t, func() bool { return cl.state.active.Load() == 5 })
		waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(peers) == 3 })
		close(release)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(peers) != 3 {
			t.Fatalf("5 concurrent streams at 2 per connection used %d connections", len(peers))
		}
	})
	t.Run("use downstream protocol", func(t *testing.T) {
		c := staticCluster("c", addrOf(h2cSrv))
		c.TypedExtensionProtocolOptions = http2Options(t, true)
		cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
		for _, major := range []int{1, 2} {
			req, _ := http.NewRequest("GET", "http://svc/", nil)
			req.ProtoMajor = major
			resp, _, err := cl.RoundTrip(req, RequestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := fmt.Sprintf("HTTP/%d", major); !strings.HasPrefix(resp.Header.Get("X-Proto"), want) {
				t.Fatalf("downstream HTTP/%d: upstream saw %s", major, resp.Header.Get("X-Proto"))
			}
		}
	})
}

// istioMutual is the ISTIO_MUTUAL socket of docs/xds.md.
func istioMutual(t testing.TB, san string, h2 bool) *corev3.TransportSocket {
	alpn := []string{"istio-peer-exchange", "istio"}
	if h2 {
		alpn = append([]string{"h2"}, alpn...)
	}
	return tlsSocketOf(t, &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.80_._.r.default.svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact(san),
				}}},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
			}},
		},
	})
}

func TestIstioMutualTLS(t *testing.T) {
	p := newPKI(t)
	serverCert, _, _ := p.issue(t, "spiffe://cluster.local/ns/default/sa/reviews")
	clientCert, _, _ := p.issue(t, "spiffe://cluster.local/ns/default/sa/productpage")
	var gotSNI, gotPeer string
	var mu sync.Mutex
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotSNI = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			gotPeer = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		mu.Unlock()
		w.Header().Set("X-Proto", r.Proto)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool, NextProtos: []string{"h2", "istio", "http/1.1"}}
	srv.EnableHTTP2 = true
	// Like the proxy's inbound side: ALPN "istio" is HTTP/1.1 over mTLS.
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		"istio": func(s *http.Server, c *tls.Conn, h http.Handler) {
			_ = http.Serve(&oneConnListener{conn: c}, h)
		},
	}
	if err := http2.ConfigureServer(srv.Config, &http2.Server{}); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	defer srv.Close()
	secrets := &staticSecrets{cert: clientCert, roots: p.pool}

	t.Run("auto mTLS by endpoint metadata", func(t *testing.T) {
		c := staticCluster("c", addrOf(srv))
		c.LoadAssignment = cla("c", lbEndpoint(addrOf(srv), map[string]map[string]any{"envoy.transport_socket_match": {"tlsMode": "istio"}}))
		tlsMatch, _ := structpb.NewStruct(map[string]any{"tlsMode": "istio"})
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
			{Name: "tlsMode-istio", Match: tlsMatch, TransportSocket: istioMutual(t, "spiffe://cluster.local/ns/default/sa/reviews", false)},
			{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: &corev3.TransportSocket{Name: RawBufferSocketName}},
		}
		cl := mustBuild(t, snapshot(c), nil, secrets).Get("c")
		resp, h, err := get(t, cl, RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		if !h.TLS() || gotSNI != "outbound_.80_._.r.default.svc.cluster.local" || gotPeer != "spiffe://cluster.local/ns/default/sa/productpage" {
			t.Fatalf("tls=%v sni=%q peer=%q", h.TLS(), gotSNI, gotPeer)
		}
		if resp.Header.Get("X-Proto") != "HTTP/1.1" {
			t.Fatalf("HTTP/1.1 cluster spoke %s", resp.Header.Get("X-Proto"))
		}
	})
	t.Run("HTTP/2 over mTLS", func(t *testing.T) {
		c := staticCluster("c", addrOf(srv))
		c.TransportSocket = istioMutual(t, "spiffe://cluster.local/ns/default/sa/reviews", true)
		c.TypedExtensionProtocolOptions = http2Options(t, false)
		resp, _, err := get(t, mustBuild(t, snapshot(c), nil, secrets).Get("c"), RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Proto") != "HTTP/2.0" {
			t.Fatalf("upstream saw %s", resp.Header.Get("X-Proto"))
		}
	})
	t.Run("wrong SPIFFE identity is a connect failure", func(t *testing.T) {
		c := staticCluster("c", addrOf(srv))
		c.TransportSocket = istioMutual(t, "spiffe://cluster.local/ns/default/sa/ratings", false)
		_, _, err := get(t, mustBuild(t, snapshot(c), nil, secrets).Get("c"), RequestOptions{})
		var ce *ConnectError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "subject alt names") {
			t.Fatalf("err = %v, want a SAN mismatch connect error", err)
		}
	})
	t.Run("untrusted root is a connect failure", func(t *testing.T) {
		other := newPKI(t)
		c := staticCluster("c", addrOf(srv))
		c.TransportSocket = istioMutual(t, "spiffe://cluster.local/ns/default/sa/reviews", false)
		_, _, err := get(t, mustBuild(t, snapshot(c), nil, &staticSecrets{cert: clientCert, roots: other.pool}).Get("c"), RequestOptions{})
		var ce *ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("err = %v, want a connect error", err)
		}
	})
	t.Run("gateway credential from snapshot secrets", func(t *testing.T) {
		_, certPEM, keyPEM := p.issue(t, "", "egress.example.com")
		c := staticCluster("c", addrOf(srv))
		c.TransportSocket = tlsSocketOf(t, &tlsv3.UpstreamTlsContext{Sni: "reviews.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://client"}},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "kubernetes://client-cacert"}},
		}})
		snap := snapshot(c)
		snap.Secrets = map[string]*tlsv3.Secret{
			"kubernetes://client": {Name: "kubernetes://client", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
			}}},
			"kubernetes://client-cacert": {Name: "kubernetes://client-cacert", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: p.caPEM}},
			}}},
		}
		s1 := mustBuild(t, snap, nil, nil)
		resp, _, err := get(t, s1.Get("c"), RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// A changed secret gives the cluster fresh state (new handshakes).
		snap2 := snapshot(c)
		snap2.Secrets = map[string]*tlsv3.Secret{"kubernetes://client": snap.Secrets["kubernetes://client"]}
		s2 := mustBuild(t, snap2, s1, nil)
		if s2.Get("c").state == s1.Get("c").state {
			t.Fatal("cluster state kept although its secret changed")
		}
	})
}

func TestOriginalDst(t *testing.T) {
	b := backend(t, "orig", nil)
	c := &clusterv3.Cluster{
		Name:                 "PassthroughCluster",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
	cl := mustBuild(t, snapshot(c), nil, nil).Get("PassthroughCluster")
	if _, _, err := get(t, cl, RequestOptions{}); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("without a destination: %v", err)
	}
	resp, h, err := get(t, cl, RequestOptions{OriginalDst: mustAddrPort(addrOf(b))})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h.Addr.String() != addrOf(b) || resp.Header.Get("X-Backend") != "orig" {
		t.Fatalf("went to %v", h.Addr)
	}
	// Unused destinations are dropped after cleanup_interval.
	now := time.Now()
	cl.now = func() time.Time { return now }
	resp, _, _ = get(t, cl, RequestOptions{OriginalDst: mustAddrPort(addrOf(b))})
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	other := backend(t, "other", nil)
	now = now.Add(6 * time.Second)
	resp, _, _ = get(t, cl, RequestOptions{OriginalDst: mustAddrPort(addrOf(other))})
	resp.Body.Close()
	cl.state.origMu.Lock()
	defer cl.state.origMu.Unlock()
	if _, kept := cl.state.origDst[mustAddrPort(addrOf(b))]; kept || len(cl.state.origDst) != 1 {
		t.Fatalf("destinations after cleanup: %v", cl.state.origDst)
	}
}

func TestDialTCP(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	c := staticCluster("c", l.Addr().String())
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}}}
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	conn, h, err := cl.DialTCP(context.Background(), RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Address() != l.Addr().String() {
		t.Fatalf("host %s", h.Address())
	}
	conn.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if _, _, err := cl.DialTCP(context.Background(), RequestOptions{}); !errors.Is(err, ErrOverflow) {
		t.Fatalf("second connection: %v, want ErrOverflow", err)
	}
	conn.Close()
	conn2, _, err := cl.DialTCP(context.Background(), RequestOptions{})
	if err != nil {
		t.Fatalf("after close: %v", err)
	}
	conn2.Close()
}

func TestConnectTimeout(t *testing.T) {
	// A loopback server that accepts but never answers the TLS handshake.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c := staticCluster("c", l.Addr().String())
	c.ConnectTimeout = durationpb.New(100 * time.Millisecond)
	c.TransportSocket = tlsSocketOf(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}})
	_, _, err := get(t, mustBuild(t, snapshot(c), nil, nil).Get("c"), RequestOptions{})
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.Timeout {
		t.Fatalf("err = %v, want a connect timeout", err)
	}
}

// oneConnListener serves a single, already accepted connection.
type oneConnListener struct {
	conn net.Conn
	done bool
	mu   sync.Mutex
	wait chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.done {
		l.done = true
		l.wait = make(chan struct{})
		l.mu.Unlock()
		return &notifyConn{Conn: l.conn, closed: l.wait}, nil
	}
	w := l.wait
	l.mu.Unlock()
	<-w
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type notifyConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *notifyConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestDNSClusters(t *testing.T) {
	b := backend(t, "dns", nil)
	_, port, _ := net.SplitHostPort(addrOf(b))
	for _, typ := range []clusterv3.Cluster_DiscoveryType{clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS} {
		c := staticCluster("c", "127.0.0.1:"+port)
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		c.LoadAssignment = cla("c", lbEndpoint("localhost:"+port, nil))
		set := mustBuild(t, snapshot(c), nil, nil)
		t.Cleanup(func() { set.Release(nil) })
		resp, h, err := get(t, set.Get("c"), RequestOptions{})
		if err != nil {
			t.Fatalf("%v: %v", typ, err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Backend") != "dns" {
			t.Fatalf("%v: answered by %q", typ, resp.Header.Get("X-Backend"))
		}
		switch typ {
		case clusterv3.Cluster_STRICT_DNS: // one host per resolved address
			if h.DNSName != "localhost" || h.Addr.String() != "127.0.0.1:"+port {
				t.Fatalf("STRICT_DNS host %+v", h)
			}
		case clusterv3.Cluster_LOGICAL_DNS: // dialled by name
			if h.Hostname != "localhost" {
				t.Fatalf("LOGICAL_DNS host %+v", h)
			}
		}
	}
}

func TestStrictDNSRefresh(t *testing.T) {
	var mu sync.Mutex
	answer := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	lookupNetIP = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		if host != "svc.example" {
			return nil, errors.New("no such host")
		}
		return answer, nil
	}
	defer func() { lookupNetIP = net.DefaultResolver.LookupNetIP }()
	c := staticCluster("c")
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	c.DnsRefreshRate = durationpb.New(10 * time.Millisecond)
	c.LoadAssignment = cla("c", lbEndpoint("svc.example:8080", nil), lbEndpoint("unresolvable.example:8080", nil))
	set := mustBuild(t, snapshot(c), nil, nil)
	defer set.Release(nil)
	cl := set.Get("c")
	addrs := func() []string {
		var out []string
		for _, h := range cl.Hosts() {
			out = append(out, h.Address())
		}
		return out
	}
	if got := addrs(); len(got) != 2 || got[0] != "127.0.0.1:8080" || got[1] != "unresolvable.example:8080" {
		t.Fatalf("hosts %v", got)
	}
	first := cl.Hosts()[0].state
	mu.Lock()
	answer = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	mu.Unlock()
	waitFor(t, func() bool { return len(addrs()) == 3 })
	if cl.Hosts()[0].state != first {
		t.Fatal("a re-resolved address lost its state")
	}
	set.Release(nil)
	mu.Lock()
	answer = []netip.Addr{netip.MustParseAddr("127.0.0.3")}
	mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if got := addrs(); len(got) != 3 {
		t.Fatalf("a released cluster kept resolving: %v", got)
	}
}

func TestReleaseClosesIdleConnectionsOfRemovedHosts(t *testing.T) {
	var mu sync.Mutex
	closed := map[string]int{}
	newSrv := func(name string) *httptest.Server {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Backend", name) }))
		srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				mu.Lock()
				closed[name]++
				mu.Unlock()
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		return srv
	}
	a, b := newSrv("a"), newSrv("b")
	s1 := mustBuild(t, snapshot(staticCluster("c", addrOf(a), addrOf(b))), nil, nil)
	for range 2 { // one keep-alive connection to each
		resp, _, err := get(t, s1.Get("c"), RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	s2 := mustBuild(t, snapshot(staticCluster("c", addrOf(a))), s1, nil)
	s1.Release(s2)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return closed["b"] == 1 })
	mu.Lock()
	defer mu.Unlock()
	if closed["a"] != 0 {
		t.Fatal("the connection of the surviving host was closed")
	}
}

func TestPriorityLevels(t *testing.T) {
	primary := backend(t, "primary", nil)
	failover := backend(t, "failover", nil)
	c := staticCluster("c", addrOf(primary))
	c.LoadAssignment.Endpoints = append(c.LoadAssignment.Endpoints, &endpointv3.LocalityLbEndpoints{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(addrOf(failover), nil)}})
	count := func(cl *Cluster) map[string]int {
		out := map[string]int{}
		for range 20 {
			resp, _, err := get(t, cl, RequestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			out[resp.Header.Get("X-Backend")]++
		}
		return out
	}
	if got := count(mustBuild(t, snapshot(c), nil, nil).Get("c")); got["primary"] != 20 {
		t.Fatalf("healthy priority 0 should take all traffic: %v", got)
	}
	c.LoadAssignment.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
	if got := count(mustBuild(t, snapshot(c), nil, nil).Get("c")); got["failover"] != 20 {
		t.Fatalf("unhealthy priority 0 should fail over: %v", got)
	}
}
