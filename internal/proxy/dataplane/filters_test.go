package dataplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// signer issues JWTs with one EC key and publishes it as a JWKS.
type signer struct {
	key  *ecdsa.PrivateKey
	jwks string
}

func newSigner(t *testing.T) *signer {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
	b, _ := json.Marshal(set)
	return &signer{key: key, jwks: string(b)}
}

func (s *signer) token(t *testing.T, claims map[string]any) string {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := sig.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

func jwtFilterOf(t *testing.T, p *jwtv3.JwtProvider) *hcmv3.HttpFilter {
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": p},
		Rules: []*jwtv3.RequirementRule{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
				Requirements: []*jwtv3.JwtRequirement{
					{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}},
					{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: nil}},
				}}}}},
		}},
	}
	cfg.Rules[0].GetRequires().GetRequiresAny().Requirements[1].RequiresType = &jwtv3.JwtRequirement_AllowMissing{AllowMissing: emptyPB()}
	return &hcmv3.HttpFilter{Name: jwtFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, cfg)}}
}

// requireJWTPrincipal is the RBAC Istio writes for "requestPrincipals: [*]".
func requireJWTPrincipal(t *testing.T) *hcmv3.HttpFilter {
	r := &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"require-jwt": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcher.MetadataMatcher{
			Filter: rbac.MetadataNamespace, Path: []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "request.auth.principal"}}},
			Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "https://issuer.example/"}}}}}}}},
	}}}}
	return &hcmv3.HttpFilter{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, r)}}
}

func TestJWTLocalAndRemoteJWKS(t *testing.T) { forEngines(t, testJWTLocalAndRemoteJWKS) }

func testJWTLocalAndRemoteJWKS(t *testing.T, engine Engine) {
	s := newSigner(t)
	app := backend(t, "app")
	// The remote JWKS is served on loopback and reached through a cluster.
	var fetches sync.Map
	jwksLn, _ := net.Listen("tcp", "127.0.0.1:0")
	jwksSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := fetches.LoadOrStore("n", new(int))
		*(v.(*int))++
		w.Write([]byte(s.jwks))
	})}
	go jwksSrv.Serve(jwksLn)
	defer jwksSrv.Close()

	providers := map[string]*jwtv3.JwtProvider{
		"local": {Issuer: "https://issuer.example", Audiences: []string{"svc"},
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: s.jwks}}},
			ClaimToHeaders:      []*jwtv3.JwtClaimToHeader{{HeaderName: "x-jwt-sub", ClaimName: "sub"}}},
		"remote": {Issuer: "https://issuer.example", Audiences: []string{"svc"},
			JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{HttpUri: &core.HttpUri{
				Uri: "http://jwks.example/keys", HttpUpstreamType: &core.HttpUri_Cluster{Cluster: "jwks"}}}},
			ClaimToHeaders: []*jwtv3.JwtClaimToHeader{{HeaderName: "x-jwt-sub", ClaimName: "sub"}}},
	}
	for name, p := range providers {
		t.Run(name, func(t *testing.T) {
			port := freePort(t)
			snap := newSnap()
			snap.Clusters["app"] = staticCluster("app", app)
			snap.Clusters["jwks"] = staticCluster("jwks", jwksLn.Addr().String())
			snap.Routes["r"] = routeTo("r", "app")
			snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{
				hcmNetFilter(t, rds("r"), jwtFilterOf(t, p), requireJWTPrincipal(t))}})
			d := newDP(t, Options{Engine: engine})
			if err := d.Apply(snap); err != nil {
				t.Fatal(err)
			}
			u := fmt.Sprintf("http://127.0.0.1:%d/", port)
			now := time.Now().Unix()
			good := s.token(t, map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "svc", "exp": now + 600})
			resp, _ := get(t, http.DefaultClient, u, "Authorization", "Bearer "+good)
			if resp.StatusCode != 200 || resp.Header.Get("Echo-X-Jwt-Sub") != "alice" || resp.Header.Get("Echo-Authorization") != "" {
				t.Fatalf("valid token: %d sub=%q auth forwarded=%q", resp.StatusCode, resp.Header.Get("Echo-X-Jwt-Sub"), resp.Header.Get("Echo-Authorization"))
			}
			for what, tok := range map[string]string{
				"expired":      s.token(t, map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "svc", "exp": now - 3600}),
				"wrong issuer": s.token(t, map[string]any{"iss": "https://evil.example", "sub": "alice", "aud": "svc", "exp": now + 600}),
				"wrong aud":    s.token(t, map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "other", "exp": now + 600}),
				"forged":       newSigner(t).token(t, map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "svc", "exp": now + 600}),
				"garbage":      "abc.def",
			} {
				if resp, _ := get(t, http.DefaultClient, u, "Authorization", "Bearer "+tok); resp.StatusCode != 401 {
					t.Errorf("%s token: %d, want 401", what, resp.StatusCode)
				}
			}
			// Missing token passes authentication; the RBAC policy
			// requiring a request principal then denies it.
			resp, body := get(t, http.DefaultClient, u)
			if resp.StatusCode != 403 || body != "RBAC: access denied" {
				t.Errorf("missing token: %d %q, want 403", resp.StatusCode, body)
			}
		})
	}
	if v, ok := fetches.Load("n"); !ok || *(v.(*int)) != 1 {
		t.Errorf("remote JWKS fetched %v times, want once (cached)", v)
	}
}

func emptyPB() *emptypbT { return &emptypbT{} }

func TestRBACThroughConnectionManager(t *testing.T) { forEngines(t, testRBACThroughConnectionManager) }

func testRBACThroughConnectionManager(t *testing.T, engine Engine) {
	app := backend(t, "app")
	port := freePort(t)
	deny := &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"deny-admin": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "/admin"}}}}}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}}}}
	allow := &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"get-only": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Header{Header: &route.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "GET"}}}}}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &core.CidrRange{AddressPrefix: "127.0.0.0", PrefixLen: wrapperUInt32(8)}}}},
	}}}}
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Routes["r"] = routeTo("r", "app")
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("r"),
		&hcmv3.HttpFilter{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, deny)}},
		&hcmv3.HttpFilter{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, allow)}},
	)}})
	d := newDP(t, Options{Engine: engine})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	if resp, _ := get(t, http.DefaultClient, u+"/ok"); resp.StatusCode != 200 {
		t.Errorf("GET /ok: %d", resp.StatusCode)
	}
	if resp, body := get(t, http.DefaultClient, u+"/admin/x"); resp.StatusCode != 403 || body != "RBAC: access denied" {
		t.Errorf("GET /admin: %d %q", resp.StatusCode, body)
	}
	resp, err := http.Post(u+"/ok", "text/plain", strings.NewReader("x"))
	if err != nil || resp.StatusCode != 403 {
		t.Errorf("POST: %v %v", resp, err)
	}
}

// TestTelemetryBothReporters sends a request through a client sidecar
// (outbound) and a server sidecar (inbound) and checks both reporters'
// istio_requests_total series, labelled from exchanged peer metadata.
func TestTelemetryBothReporters(t *testing.T) { forEngines(t, testTelemetryBothReporters) }

func testTelemetryBothReporters(t *testing.T, engine Engine) {
	reg := prometheus.NewRegistry()
	app := backend(t, "app")
	inPort, outPort := freePort(t), freePort(t)

	server := newDP(t, Options{Engine: engine, Registry: reg, Node: testNode("reviews", "bookinfo")})
	in := newSnap()
	in.Clusters["inbound|9080||"] = staticCluster("inbound|9080||", app)
	in.Routes["inbound|9080||"] = routeTo("inbound|9080||", "inbound|9080||")
	in.Listeners["in"] = realListener("in", inPort, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("inbound|9080||"), statsHTTPFilter(t, reporterInbound))}})
	if err := server.Apply(in); err != nil {
		t.Fatal(err)
	}
	client := newDP(t, Options{Engine: engine, Registry: reg, Node: testNode("productpage", "bookinfo")})
	out := newSnap()
	c := staticCluster("outbound|9080||reviews.bookinfo.svc.cluster.local", fmt.Sprintf("127.0.0.1:%d", inPort))
	c.Metadata = istioServiceMetadata(t, "reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo")
	out.Clusters[c.Name] = c
	out.Routes["9080"] = routeTo("9080", c.Name)
	out.Listeners["out"] = realListener("out", outPort, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("9080"), statsHTTPFilter(t, reporterOutbound))}})
	if err := client.Apply(out); err != nil {
		t.Fatal(err)
	}
	resp, _ := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/reviews/1", outPort))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if resp.Header.Get("X-Envoy-Peer-Metadata") != "" || resp.Header.Get("Echo-X-Envoy-Peer-Metadata") != "" {
		t.Error("peer metadata leaked to the app or the client")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]string{}
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			series[l["reporter"]] = l
		}
	}
	want := map[string]map[string]string{
		"source": {"source_workload": "productpage", "source_workload_namespace": "bookinfo", "source_app": "productpage", "source_version": "v1",
			"source_principal":     "spiffe://cluster.local/ns/bookinfo/sa/productpage",
			"destination_workload": "reviews", "destination_workload_namespace": "bookinfo", "destination_app": "reviews",
			"destination_service": "reviews.bookinfo.svc.cluster.local", "destination_service_name": "reviews", "destination_service_namespace": "bookinfo",
			"destination_canonical_service": "reviews", "response_code": "200", "request_protocol": "http", "response_flags": "-",
			"connection_security_policy": "unknown", "source_cluster": "Kubernetes", "destination_cluster": "Kubernetes"},
		"destination": {"source_workload": "productpage", "source_workload_namespace": "bookinfo", "source_canonical_service": "productpage",
			"destination_workload": "reviews", "destination_principal": "spiffe://cluster.local/ns/bookinfo/sa/reviews",
			"response_code": "200", "connection_security_policy": "none", "grpc_response_status": "unknown"},
	}
	for rep, labels := range want {
		got, ok := series[rep]
		if !ok {
			t.Fatalf("no istio_requests_total series with reporter=%s; have %v", rep, series)
		}
		if len(got) != len(labelNames) {
			t.Errorf("reporter=%s has %d labels, want %d", rep, len(got), len(labelNames))
		}
		for k, v := range labels {
			if got[k] != v {
				t.Errorf("reporter=%s %s = %q, want %q", rep, k, got[k], v)
			}
		}
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
		if !names[n] {
			t.Errorf("metric %s not exported", n)
		}
	}
}

// collector is an in-test OTLP trace collector.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string
	trace []string
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s.GetName())
				c.trace = append(c.trace, fmt.Sprintf("%x", s.GetTraceId()))
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func TestTracingPropagatesAndExports(t *testing.T) { forEngines(t, testTracingPropagatesAndExports) }

func testTracingPropagatesAndExports(t *testing.T, engine Engine) {
	col := &collector{}
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, col)
	go gs.Serve(gl)
	defer gs.Stop()

	app := backend(t, "app")
	port := freePort(t)
	otel := &tracev3.OpenTelemetryConfig{GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: "otel"}}}, ServiceName: "productpage.default"}
	hc := rds("r")
	hc.Tracing = &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 100},
		Provider: &tracev3.Tracing_Http{Name: otelTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(t, otel)}}}
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Clusters["otel"] = staticCluster("otel", gl.Addr().String())
	snap.Routes["r"] = routeTo("r", "app")
	snap.Routes["r"].VirtualHosts[0].Routes[0].Decorator = &route.Decorator{Operation: "reviews-op"}
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, hc)}})
	d := newDP(t, Options{Engine: engine})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	resp, _ := get(t, http.DefaultClient, u, "traceparent", "00-"+tid+"-00f067aa0ba902b7-01")
	if tp := resp.Header.Get("Echo-Traceparent"); !strings.HasPrefix(tp, "00-"+tid+"-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent = %q: want the same trace, a new span", tp)
	}
	const b3tid = "463ac35c9f6413ad48485a3953bb6124"
	resp, _ = get(t, http.DefaultClient, u, "b3", b3tid+"-0020000000000001-1")
	if got := resp.Header.Get("Echo-X-B3-Traceid"); got != b3tid {
		t.Errorf("b3 single: upstream x-b3-traceid = %q", got)
	}
	resp, _ = get(t, http.DefaultClient, u, "X-B3-TraceId", "a3ce929d0e0e4736", "X-B3-SpanId", "00f067aa0ba902b7", "X-B3-Sampled", "1")
	if got := resp.Header.Get("Echo-Traceparent"); !strings.Contains(got, "0000000000000000a3ce929d0e0e4736") {
		t.Errorf("b3 multi: upstream traceparent = %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.spans) < 3 || col.spans[0] != "reviews-op" {
		t.Fatalf("exported spans %v", col.spans)
	}
	found := false
	for _, tr := range col.trace {
		if tr == tid {
			found = true
		}
	}
	if !found {
		t.Errorf("no exported span in trace %s: %v", tid, col.trace)
	}
}

func TestDrainFinishesInFlight(t *testing.T) { forEngines(t, testDrainFinishesInFlight) }

func testDrainFinishesInFlight(t *testing.T, engine Engine) {
	app := backend(t, "app")
	port := freePort(t)
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Routes["r"] = routeTo("r", "app")
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("r"))}})
	d := newDP(t, Options{Engine: engine})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/slow?sleep=300ms", port))
		if err != nil {
			done <- err.Error()
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 64)
		n, _ := resp.Body.Read(b)
		done <- string(b[:n])
	}()
	time.Sleep(100 * time.Millisecond) // the request is in flight
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Ready() {
		t.Error("ready while drained")
	}
	if got := <-done; got != "app /slow" {
		t.Fatalf("in-flight request: %q", got)
	}
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Error("accepting after drain")
	}
	// Configuration keeps arriving while the pod terminates: it must not
	// bind the listeners again.
	if err := d.Apply(snap.Clone()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Error("an apply after drain bound the listener again")
	}
}

func BenchmarkHTTPHotPath(b *testing.B) {
	b.Run("test-engine", func(b *testing.B) { benchHTTP(b, testEngine{}) })
	b.Run("default-engine", func(b *testing.B) { benchHTTP(b, DefaultEngine{}) })
}

// benchHTTP measures one request through a listener, the connection
// manager with istio.stats and the engine to a loopback app (client, data
// plane and app share the machine).
func benchHTTP(b *testing.B, engine Engine) {
	app := backend(b, "app")
	port := freePort(b)
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Routes["r"] = routeTo("r", "app")
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(b, rds("r"), statsHTTPFilter(b, reporterInbound))}})
	d := newDP(b, Options{Engine: engine, Registry: prometheus.NewRegistry()})
	if err := d.Apply(snap); err != nil {
		b.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	u := fmt.Sprintf("http://127.0.0.1:%d/bench", port)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 256)
		for pb.Next() {
			resp, err := c.Get(u)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
		}
	})
}
