package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// echo reports what the upstream received.
func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Proto", r.Proto)
	for _, k := range []string{"X-Request-Id", "X-Forwarded-Proto", "X-Envoy-Attempt-Count", "X-Added", "X-Order", "Connection", "Keep-Alive", "X-Hop", "Traceparent", "X-B3-Traceid", "X-Removed", "X-Envoy-Original-Path", "X-Envoy-Expected-Rq-Timeout-Ms"} {
		if v, ok := r.Header[k]; ok {
			w.Header()["Echo-"+k] = v
		}
	}
	w.Header().Set("X-Upstream-Remove", "gone")
	body, _ := io.ReadAll(r.Body)
	w.Write(body)
}

func TestForwardHeadersAndRewrites(t *testing.T) {
	b := backend(t, "b", echo)
	set := buildSet(t, nil, staticCluster("c", addrOf(b)))
	vh := vhost("vh", []string{"*"},
		toCluster("prefix-rewrite", prefixMatch("/old/"), "c", func(ra *routev3.RouteAction) {
			ra.PrefixRewrite = "/new/"
			ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "rewritten.example"}
		}),
		toCluster("regex-rewrite", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/v1/"}}, "c", func(ra *routev3.RouteAction) {
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex(`^/v1/users/([^/]+)$`), Substitution: `/users?id=\1`}
		}),
		toCluster("default", prefixMatch("/"), "c"),
	)
	vh.RequestHeadersToAdd = []*corev3.HeaderValueOption{hdrOpt("x-order", "vhost", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	vh.Routes[2].RequestHeadersToAdd = []*corev3.HeaderValueOption{
		hdrOpt("x-order", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hdrOpt("x-added", "a", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		hdrOpt("x-added", "from %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
	}
	vh.Routes[2].RequestHeadersToRemove = []string{"x-removed"}
	vh.Routes[2].ResponseHeadersToAdd = []*corev3.HeaderValueOption{hdrOpt("x-resp", "route", 0)}
	vh.Routes[2].ResponseHeadersToRemove = []string{"x-upstream-remove"}
	vh.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hdrOpt("x-resp-vh", "vh", 0)}
	p := newProxy(t, routeConfig(vh), set)

	resp, body := p.get(t, "svc", "/x?q=1", "Connection", "X-Hop", "X-Hop", "1", "Keep-Alive", "timeout=5",
		"X-Removed", "1", "Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "X-B3-Traceid", "abc")
	h := resp.Header
	if resp.StatusCode != 200 || h.Get("X-Path") != "/x?q=1" || h.Get("X-Host") != "svc" {
		t.Fatalf("status %d path %q host %q", resp.StatusCode, h.Get("X-Path"), h.Get("X-Host"))
	}
	if h.Get("Echo-X-Request-Id") == "" || len(h.Get("Echo-X-Request-Id")) != 36 {
		t.Errorf("x-request-id %q not generated", h.Get("Echo-X-Request-Id"))
	}
	if h.Get("Echo-X-Forwarded-Proto") != "http" || h.Get("Echo-X-Envoy-Attempt-Count") != "1" {
		t.Errorf("x-forwarded-proto %q attempt %q", h.Get("Echo-X-Forwarded-Proto"), h.Get("Echo-X-Envoy-Attempt-Count"))
	}
	if h.Get("Echo-X-Envoy-Expected-Rq-Timeout-Ms") != "15000" {
		t.Errorf("x-envoy-expected-rq-timeout-ms %q", h.Get("Echo-X-Envoy-Expected-Rq-Timeout-Ms"))
	}
	if h.Get("Echo-X-Hop") != "" || h.Get("Echo-Keep-Alive") != "" {
		t.Errorf("hop-by-hop headers forwarded: %v", h)
	}
	if h.Get("Echo-Traceparent") == "" || h.Get("Echo-X-B3-Traceid") != "abc" {
		t.Errorf("trace headers not preserved")
	}
	// Less specific levels are applied last and win on overwrite (Envoy's default order).
	if got := h.Values("Echo-X-Order"); len(got) != 1 || got[0] != "vhost" {
		t.Errorf("x-order = %v, want [vhost]", got)
	}
	if got := h.Values("Echo-X-Added"); len(got) != 2 || got[0] != "a" || got[1] != "from 127.0.0.1" {
		t.Errorf("x-added = %v", got)
	}
	if h.Get("Echo-X-Removed") != "" {
		t.Errorf("x-removed was forwarded")
	}
	if h.Get("X-Resp") != "route" || h.Get("X-Resp-Vh") != "vh" || h.Get("X-Upstream-Remove") != "" {
		t.Errorf("response headers: %v", h)
	}
	if body != "" {
		t.Errorf("body %q", body)
	}
	info := p.lastInfo(t)
	if info.RouteName != "default" || info.ClusterName != "c" || info.Host == nil || info.Attempts != 1 || info.ResponseFlags != "" || info.ResponseCode != 200 {
		t.Errorf("info %+v", info)
	}

	resp, _ = p.get(t, "svc", "/old/thing?a=b", "X-Request-Id", "given")
	if resp.Header.Get("X-Path") != "/new/thing?a=b" || resp.Header.Get("X-Host") != "rewritten.example" || resp.Header.Get("Echo-X-Request-Id") != "given" {
		t.Errorf("prefix rewrite: path %q host %q id %q", resp.Header.Get("X-Path"), resp.Header.Get("X-Host"), resp.Header.Get("Echo-X-Request-Id"))
	}
	if resp.Header.Get("Echo-X-Envoy-Original-Path") != "/old/thing?a=b" {
		t.Errorf("x-envoy-original-path %q", resp.Header.Get("Echo-X-Envoy-Original-Path"))
	}
	resp, _ = p.get(t, "svc", "/v1/users/42")
	if resp.Header.Get("X-Path") != "/users%3Fid=42" && resp.Header.Get("X-Path") != "/users?id=42" {
		t.Errorf("regex rewrite: %q", resp.Header.Get("X-Path"))
	}
}

func TestLocalReplies(t *testing.T) {
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := closed.Addr().String()
	closed.Close()
	set := buildSet(t, nil, staticCluster("dead", deadAddr), staticCluster("empty"))
	redirect := func(name, prefix string, r *routev3.RedirectAction) *routev3.Route {
		return &routev3.Route{Name: name, Match: prefixMatch(prefix), Action: &routev3.Route_Redirect{Redirect: r}}
	}
	vh := vhost("vh", []string{"svc", "svc:8080"},
		toCluster("missing", prefixMatch("/missing"), "no-such-cluster"),
		toCluster("dead", prefixMatch("/dead"), "dead"),
		toCluster("empty", prefixMatch("/empty"), "empty"),
		&routev3.Route{Name: "direct", Match: prefixMatch("/direct"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 418, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "teapot"}},
		}}, ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrOpt("x-direct", "1", 0)}},
		redirect("https", "/https", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}),
		redirect("host", "/host", &routev3.RedirectAction{HostRedirect: "other.example", PortRedirect: 9090, ResponseCode: routev3.RedirectAction_FOUND}),
		redirect("path", "/path", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/elsewhere"}, ResponseCode: routev3.RedirectAction_SEE_OTHER, StripQuery: true}),
		redirect("prefix", "/prefix/", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/p2/"}, ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT}),
		redirect("perm", "/perm", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}, HostRedirect: "secure.example", ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}),
	)
	p := newProxy(t, routeConfig(vh), set)
	cases := []struct {
		host, path string
		status     int
		body       string
		location   string
		flags      string
	}{
		{"unknown-host", "/", 404, "", "", "NR"},
		{"svc", "/missing", 503, "", "", "NC"},
		{"svc", "/dead", 503, bodyConnect, "", "UF"},
		{"svc", "/empty", 503, bodyNoHealthy, "", "UH"},
		{"svc", "/direct", 418, "teapot", "", ""},
		{"svc:8080", "/https/a?b=c", 301, "", "https://svc/https/a?b=c", ""},
		{"svc:8080", "/host/x", 302, "", "http://other.example:9090/host/x", ""},
		{"svc", "/path/x?q=1", 303, "", "http://svc/elsewhere", ""},
		{"svc", "/prefix/rest?q=1", 307, "", "http://svc/p2/rest?q=1", ""},
		{"svc", "/perm", 308, "", "https://secure.example/perm", ""},
	}
	for _, tc := range cases {
		resp, body := p.get(t, tc.host, tc.path)
		info := p.lastInfo(t)
		if resp.StatusCode != tc.status || body != tc.body || resp.Header.Get("Location") != tc.location || info.ResponseFlags != tc.flags {
			t.Errorf("%s%s: %d %q location %q flags %q; want %d %q %q %q", tc.host, tc.path, resp.StatusCode, body, resp.Header.Get("Location"), info.ResponseFlags, tc.status, tc.body, tc.location, tc.flags)
		}
	}
	resp, _ := p.get(t, "svc", "/direct")
	if resp.Header.Get("X-Direct") != "1" {
		t.Errorf("direct response lacks the route's response headers")
	}
}

func TestWeightedClusters(t *testing.T) {
	a := backend(t, "a", echo)
	b := backend(t, "b", echo)
	set := buildSet(t, nil, staticCluster("a", addrOf(a)), staticCluster("b", addrOf(b)))
	rt := toCluster("split", prefixMatch("/"), "", func(ra *routev3.RouteAction) {
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "a", Weight: wrapperspb.UInt32(80), RequestHeadersToAdd: []*corev3.HeaderValueOption{hdrOpt("x-added", "to-a", 0)}, ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrOpt("x-subset", "a", 0)}},
			{Name: "b", Weight: wrapperspb.UInt32(20), ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdrOpt("x-subset", "b", 0)}},
		}}}
	})
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, rt)), set)
	counts := map[string]int{}
	const n = 1000
	for range n {
		resp, _ := p.get(t, "svc", "/")
		got := resp.Header.Get("X-Backend")
		counts[got]++
		if resp.Header.Get("X-Subset") != got {
			t.Fatalf("weighted-cluster response header %q for backend %q", resp.Header.Get("X-Subset"), got)
		}
		if (got == "a") != (resp.Header.Get("Echo-X-Added") == "to-a") {
			t.Fatalf("weighted-cluster request header on the wrong cluster")
		}
	}
	// 80/20 with a binomial standard deviation of about 13 requests.
	if counts["a"] < 740 || counts["a"] > 860 {
		t.Fatalf("split %v, want about 800/200", counts)
	}
}

func TestRetries(t *testing.T) {
	var calls atomic.Int32
	flaky := backend(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Attempt", r.Header.Get("X-Envoy-Attempt-Count"))
		w.Header().Set("X-Body", string(body))
		if calls.Add(1)%3 != 0 { // two failures, then a success
			w.WriteHeader(503)
			return
		}
	})
	retry := func(on string, n uint32, mutate ...func(*routev3.RetryPolicy)) func(*routev3.RouteAction) {
		return func(ra *routev3.RouteAction) {
			ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(n),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
			for _, m := range mutate {
				m(ra.RetryPolicy)
			}
		}
	}
	set := buildSet(t, nil, staticCluster("flaky", addrOf(flaky)))
	vh := vhost("vh", []string{"*"},
		toCluster("three", prefixMatch("/three"), "flaky", retry("5xx", 3)),
		toCluster("one", prefixMatch("/one"), "flaky", retry("gateway-error", 1)),
		toCluster("codes", prefixMatch("/codes"), "flaky", retry("retriable-status-codes", 3, func(p *routev3.RetryPolicy) { p.RetriableStatusCodes = []uint32{503} })),
		toCluster("connect-only", prefixMatch("/connect-only"), "flaky", retry("connect-failure,unknown-name", 3)),
		toCluster("headers", prefixMatch("/headers"), "flaky", retry("retriable-headers", 3, func(p *routev3.RetryPolicy) {
			p.RetriableHeaders = []*routev3.HeaderMatcher{{Name: ":status", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex(`5\d\d`)}}}
		})),
		toCluster("request-headers", prefixMatch("/request-headers"), "flaky", retry("5xx", 3, func(p *routev3.RetryPolicy) {
			p.RetriableRequestHeaders = []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactStr("GET")}}}
		})),
		toCluster("none", prefixMatch("/none"), "flaky"),
	)
	p := newProxy(t, routeConfig(vh), set)
	cases := []struct {
		path     string
		status   int
		attempts int
		flags    string
	}{
		{"/three", 200, 3, ""},
		{"/one", 503, 2, "URX"},
		{"/codes", 200, 3, ""},
		{"/connect-only", 503, 1, ""},
		{"/request-headers", 503, 1, ""}, // only GET requests are retried
		{"/headers", 200, 3, ""},
		{"/none", 503, 1, ""},
	}
	for _, tc := range cases {
		calls.Store(0)
		req, _ := http.NewRequest("POST", "http://x"+tc.path, strings.NewReader("payload"))
		req.Host = "svc"
		resp, _ := p.do(t, req)
		info := p.lastInfo(t)
		if resp.StatusCode != tc.status || info.Attempts != tc.attempts || info.ResponseFlags != tc.flags {
			t.Errorf("%s: status %d attempts %d flags %q; want %d %d %q", tc.path, resp.StatusCode, info.Attempts, info.ResponseFlags, tc.status, tc.attempts, tc.flags)
		}
		if resp.StatusCode == 200 && (resp.Header.Get("X-Body") != "payload" || resp.Header.Get("X-Attempt") != "3") {
			t.Errorf("%s: retried request body %q attempt %q", tc.path, resp.Header.Get("X-Body"), resp.Header.Get("X-Attempt"))
		}
	}
}

func TestRetryOtherHostAndConnectFailure(t *testing.T) {
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := closed.Addr().String()
	closed.Close()
	good := backend(t, "good", nil)
	// Round robin starts at the dead host; the retry must pick the other.
	set := buildSet(t, nil, staticCluster("c", dead, addrOf(good)))
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c", func(ra *routev3.RouteAction) {
		ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(1),
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}}
	}))
	p := newProxy(t, routeConfig(vh), set)
	for range 4 {
		resp, _ := p.get(t, "svc", "/")
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "good" {
			t.Fatalf("status %d from %q", resp.StatusCode, resp.Header.Get("X-Backend"))
		}
	}
}

func TestTimeouts(t *testing.T) {
	var calls atomic.Int32
	slow := backend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first-slow" && calls.Add(1) > 1 {
			return // later attempts are fast
		}
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	set := buildSet(t, nil, staticCluster("slow", addrOf(slow)))
	vh := vhost("vh", []string{"*"},
		toCluster("route-timeout", prefixMatch("/slow"), "slow", func(ra *routev3.RouteAction) { ra.Timeout = durationpb.New(100 * time.Millisecond) }),
		toCluster("per-try", prefixMatch("/first-slow"), "slow", func(ra *routev3.RouteAction) {
			ra.Timeout = durationpb.New(5 * time.Second)
			ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(100 * time.Millisecond)}
		}),
		toCluster("grpc-timeout", prefixMatch("/grpc"), "slow", func(ra *routev3.RouteAction) {
			ra.Timeout = durationpb.New(0)
			ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(0)}
		}),
	)
	p := newProxy(t, routeConfig(vh), set)
	resp, body := p.get(t, "svc", "/slow")
	if info := p.lastInfo(t); resp.StatusCode != 504 || body != bodyTimeout || info.ResponseFlags != "UT" {
		t.Fatalf("route timeout: %d %q %q", resp.StatusCode, body, info.ResponseFlags)
	}
	resp, _ = p.get(t, "svc", "/first-slow")
	if info := p.lastInfo(t); resp.StatusCode != 200 || info.Attempts != 2 {
		t.Fatalf("per-try timeout then retry: %d after %d attempts", resp.StatusCode, info.Attempts)
	}
	resp, _ = p.get(t, "svc", "/grpc", "grpc-timeout", "100m")
	if resp.StatusCode != 504 {
		t.Fatalf("grpc-timeout header: %d", resp.StatusCode)
	}
}

func TestFaultInjection(t *testing.T) {
	b := backend(t, "b", nil)
	set := buildSet(t, nil, staticCluster("c", addrOf(b)))
	fault := func(f *faultv3HTTPFault) map[string]*anypbAny {
		return map[string]*anypbAny{FaultFilterName: anyOf(t, f)}
	}
	vh := vhost("vh", []string{"*"},
		toCluster("delay", prefixMatch("/delay"), "c"),
		toCluster("abort", prefixMatch("/abort"), "c"),
		toCluster("half", prefixMatch("/half"), "c"),
		toCluster("grpc", prefixMatch("/grpc"), "c"),
	)
	vh.Routes[0].TypedPerFilterConfig = fault(&faultv3HTTPFault{Delay: &faultcommonDelay{
		FaultDelaySecifier: &faultcommonFixed{FixedDelay: durationpb.New(150 * time.Millisecond)}, Percentage: pct(100)}})
	vh.Routes[1].TypedPerFilterConfig = fault(&faultv3HTTPFault{Abort: &faultv3Abort{ErrorType: &faultv3AbortHTTP{HttpStatus: 418}, Percentage: pct(100)}})
	vh.Routes[2].TypedPerFilterConfig = fault(&faultv3HTTPFault{Abort: &faultv3Abort{ErrorType: &faultv3AbortHTTP{HttpStatus: 500}, Percentage: pct(50)}})
	vh.Routes[3].TypedPerFilterConfig = fault(&faultv3HTTPFault{Abort: &faultv3Abort{ErrorType: &faultv3AbortGRPC{GrpcStatus: 8}, Percentage: pct(100)}})
	p := newProxy(t, routeConfig(vh), set)

	start := time.Now()
	resp, _ := p.get(t, "svc", "/delay")
	if elapsed := time.Since(start); resp.StatusCode != 200 || elapsed < 150*time.Millisecond {
		t.Fatalf("delay: %d after %v", resp.StatusCode, elapsed)
	}
	if f := p.lastInfo(t).ResponseFlags; f != "DI" {
		t.Fatalf("delay flags %q", f)
	}
	resp, body := p.get(t, "svc", "/abort")
	if resp.StatusCode != 418 || body != "fault filter abort" || p.lastInfo(t).ResponseFlags != "FI" {
		t.Fatalf("abort: %d %q", resp.StatusCode, body)
	}
	aborted := 0
	for range 400 {
		if resp, _ := p.get(t, "svc", "/half"); resp.StatusCode == 500 {
			aborted++
		}
	}
	if aborted < 160 || aborted > 240 {
		t.Fatalf("50%% abort: %d of 400", aborted)
	}
	resp, _ = p.get(t, "svc", "/grpc", "content-type", "application/grpc")
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "8" {
		t.Fatalf("grpc abort: %d grpc-status %q", resp.StatusCode, resp.Header.Get("Grpc-Status"))
	}
}

func TestMirror(t *testing.T) {
	got := make(chan string, 1)
	mirror := backend(t, "mirror", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Host + " " + r.URL.Path + " " + string(body)
	})
	primary := backend(t, "primary", echo)
	set := buildSet(t, nil, staticCluster("primary", addrOf(primary)), staticCluster("mirror", addrOf(mirror)))
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "primary", func(ra *routev3.RouteAction) {
		ra.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "mirror", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct(100)}}}
	}))
	p := newProxy(t, routeConfig(vh), set)
	req, _ := http.NewRequest("POST", "http://x/orders", strings.NewReader("order-1"))
	req.Host = "shop:8080"
	resp, body := p.do(t, req)
	if resp.StatusCode != 200 || body != "order-1" || resp.Header.Get("X-Backend") != "primary" {
		t.Fatalf("primary: %d %q", resp.StatusCode, body)
	}
	select {
	case m := <-got:
		if m != "shop-shadow:8080 /orders order-1" {
			t.Fatalf("mirror received %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("mirror received nothing")
	}
	if info := p.lastInfo(t); info.MirroredTo != "mirror" {
		t.Fatalf("MirroredTo %q", info.MirroredTo)
	}
}

func TestCORS(t *testing.T) {
	var upstreamCalls atomic.Int32
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) { upstreamCalls.Add(1) })
	set := buildSet(t, nil, staticCluster("c", addrOf(b)))
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))
	vh.TypedPerFilterConfig = map[string]*anypbAny{CORSFilterName: anyOf(t, &corsv3Policy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{exactStr("https://app.example"), {MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".trusted.example"}}},
		AllowMethods:           "GET,POST",
		AllowHeaders:           "authorization,content-type",
		ExposeHeaders:          "x-custom",
		MaxAge:                 "600",
		AllowCredentials:       wrapperspb.Bool(true),
	})}
	p := newProxy(t, routeConfig(vh), set)
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", "http://x/api", nil)
		req.Host = "svc"
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, _ := p.do(t, req)
		return resp
	}
	resp := preflight("https://app.example")
	h := resp.Header
	if resp.StatusCode != 200 || h.Get("Access-Control-Allow-Origin") != "https://app.example" || h.Get("Access-Control-Allow-Methods") != "GET,POST" ||
		h.Get("Access-Control-Allow-Headers") != "authorization,content-type" || h.Get("Access-Control-Max-Age") != "600" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight answer %d %v", resp.StatusCode, h)
	}
	if upstreamCalls.Load() != 0 {
		t.Fatal("an allowed preflight reached the upstream")
	}
	resp = preflight("https://evil.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || upstreamCalls.Load() != 1 {
		t.Fatalf("disallowed preflight: allow-origin %q, upstream calls %d", resp.Header.Get("Access-Control-Allow-Origin"), upstreamCalls.Load())
	}
	resp, _ = p.get(t, "svc", "/api", "Origin", "https://a.trusted.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://a.trusted.example" || resp.Header.Get("Access-Control-Expose-Headers") != "x-custom" {
		t.Fatalf("simple request CORS headers: %v", resp.Header)
	}
	resp, _ = p.get(t, "svc", "/api", "Origin", "https://evil.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("disallowed origin got allow-origin")
	}
}

func TestConsistentHashRouting(t *testing.T) {
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, addrOf(backend(t, fmt.Sprint(i), nil)))
	}
	c := staticCluster("c", addrs...)
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	set := buildSet(t, nil, c)
	hashOn := func(hp *routev3.RouteAction_HashPolicy) func(*routev3.RouteAction) {
		return func(ra *routev3.RouteAction) { ra.HashPolicy = []*routev3.RouteAction_HashPolicy{hp} }
	}
	vh := vhost("vh", []string{"*"},
		toCluster("header", prefixMatch("/header"), "c", hashOn(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}})),
		toCluster("query", prefixMatch("/query"), "c", hashOn(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "u"}}})),
		toCluster("source", prefixMatch("/source"), "c", hashOn(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}})),
		toCluster("cookie", prefixMatch("/cookie"), "c", hashOn(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Ttl: durationpb.New(time.Hour), Path: "/"}}})),
	)
	p := newProxy(t, routeConfig(vh), set)
	sticky := func(path string, hdr ...string) map[string]bool {
		seen := map[string]bool{}
		for range 10 {
			resp, _ := p.get(t, "svc", path, hdr...)
			seen[resp.Header.Get("X-Backend")] = true
		}
		return seen
	}
	spread := map[string]bool{}
	for u := range 12 {
		seen := sticky("/header", "x-user", fmt.Sprint("user-", u))
		if len(seen) != 1 {
			t.Fatalf("user-%d spread over %v", u, seen)
		}
		for k := range seen {
			spread[k] = true
		}
		if len(sticky(fmt.Sprint("/query?u=", u))) != 1 {
			t.Fatalf("query hash not sticky")
		}
	}
	if len(spread) < 2 {
		t.Fatalf("12 users all on %v", spread)
	}
	if len(sticky("/source")) != 1 {
		t.Fatal("source ip hash not sticky")
	}
	resp, _ := p.get(t, "svc", "/cookie")
	ck := resp.Header.Get("Set-Cookie")
	if !strings.HasPrefix(ck, "session=") || !strings.Contains(ck, "Max-Age=3600") {
		t.Fatalf("Set-Cookie %q", ck)
	}
	first := resp.Header.Get("X-Backend")
	value := strings.TrimPrefix(strings.Split(ck, ";")[0], "session=")
	for range 10 {
		resp, _ := p.get(t, "svc", "/cookie", "Cookie", "session="+value)
		if resp.Header.Get("X-Backend") != first || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("cookie affinity lost: %s vs %s", resp.Header.Get("X-Backend"), first)
		}
	}
}

func TestCircuitBreakerOverflow(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	slow := backend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	c := staticCluster("c", addrOf(slow))
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(1)}}}
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), buildSet(t, nil, c))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.get(t, "svc", "/")
	}()
	<-entered
	resp, _ := p.get(t, "svc", "/")
	if resp.StatusCode != 503 || resp.Header.Get("X-Envoy-Overloaded") != "true" || p.lastInfo(t).ResponseFlags != "UO" {
		t.Fatalf("overflow answer %d %v", resp.StatusCode, resp.Header)
	}
	close(release)
	wg.Wait()
}

func TestStreamingAndTrailers(t *testing.T) {
	next := make(chan struct{})
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Write([]byte("first\n"))
		w.(http.Flusher).Flush()
		<-next // the client must see "first" before this returns
		w.Write([]byte("second\n"))
		w.Header().Set("X-Checksum", "abc")
	})
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), buildSet(t, nil, staticCluster("c", addrOf(b))))
	req, _ := http.NewRequest("GET", p.srv.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk %q %v", line, err)
	}
	close(next)
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Fatalf("rest %q trailer %v", rest, resp.Trailer)
	}
}

func TestWebsocketUpgrade(t *testing.T) {
	// An upstream that accepts the upgrade and echoes bytes.
	up := backend(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.WriteHeader(400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	})
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), buildSet(t, nil, staticCluster("c", addrOf(up))))
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, msg := range []string{"hello", "world"} {
		conn.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q %v", buf, err)
		}
	}
}

func TestTableSwapKeepsInFlightRequests(t *testing.T) {
	release := make(chan struct{})
	a := backend(t, "a", func(w http.ResponseWriter, r *http.Request) { <-release })
	b := backend(t, "b", nil)
	set := buildSet(t, nil, staticCluster("a", addrOf(a)), staticCluster("b", addrOf(b)))
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "a"))), set)
	done := make(chan string)
	go func() {
		resp, _ := p.get(t, "svc", "/")
		done <- resp.Header.Get("X-Backend")
	}()
	time.Sleep(50 * time.Millisecond) // let the request reach "a"
	next, err := Compile(routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "b"))))
	if err != nil {
		t.Fatal(err)
	}
	p.table.Store(next)
	resp, _ := p.get(t, "svc", "/")
	if resp.Header.Get("X-Backend") != "b" {
		t.Fatal("new requests do not use the new table")
	}
	close(release)
	if got := <-done; got != "a" {
		t.Fatalf("in-flight request answered by %q", got)
	}
}

func pct(n uint32) *typev3FractionalPercent { return &typev3FractionalPercent{Numerator: n} }

func TestUpstreamResetMidStream(t *testing.T) {
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), buildSet(t, nil, staticCluster("c", addrOf(b))))
	req, _ := http.NewRequest("GET", p.srv.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("the client saw a complete response although the upstream reset")
	}
	if info := p.lastInfo(t); !info.HasFlag(FlagUpstreamReset) {
		t.Fatalf("flags %q", info.ResponseFlags)
	}
}

func TestRetryOnReset(t *testing.T) {
	var calls atomic.Int32
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close() // reset before any response
		}
	})
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c", func(ra *routev3.RouteAction) {
		ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: "reset", NumRetries: wrapperspb.UInt32(1)}
	}), toCluster("plain", prefixMatch("/plain"), "c"))
	vh.Routes[0], vh.Routes[1] = vh.Routes[1], vh.Routes[0]
	p := newProxy(t, routeConfig(vh), buildSet(t, nil, staticCluster("c", addrOf(b))))
	resp, _ := p.get(t, "svc", "/")
	if info := p.lastInfo(t); resp.StatusCode != 200 || info.Attempts != 2 {
		t.Fatalf("retry on reset: %d after %d attempts", resp.StatusCode, info.Attempts)
	}
	// A fresh proxy and connection: net/http itself replays idempotent
	// requests that fail on a reused keep-alive connection.
	calls.Store(0)
	p = newProxy(t, routeConfig(vh), buildSet(t, nil, staticCluster("c", addrOf(b))))
	resp, body := p.get(t, "svc", "/plain")
	if info := p.lastInfo(t); resp.StatusCode != 503 || body != bodyReset || info.ResponseFlags != "UR" {
		t.Fatalf("reset without retry: %d %q %q", resp.StatusCode, body, info.ResponseFlags)
	}
}

func TestMaxStreamDuration(t *testing.T) {
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("start"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c", func(ra *routev3.RouteAction) {
		ra.Timeout = durationpb.New(0)
		ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(100 * time.Millisecond)}
	}))
	p := newProxy(t, routeConfig(vh), buildSet(t, nil, staticCluster("c", addrOf(b))))
	req, _ := http.NewRequest("GET", p.srv.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if info := p.lastInfo(t); !info.HasFlag(FlagStreamDuration) {
		t.Fatalf("flags %q", info.ResponseFlags)
	}
}

func TestOutlierEjectionThroughRouter(t *testing.T) {
	var healthy atomic.Bool
	good := backend(t, "good", nil)
	bad := backend(t, "bad", func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(503)
		}
	})
	c := staticCluster("c", addrOf(good), addrOf(bad))
	c.OutlierDetection = &clusterv3.OutlierDetection{
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(2),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		Interval:                           durationpb.New(20 * time.Millisecond),
		BaseEjectionTime:                   durationpb.New(200 * time.Millisecond),
		MaxEjectionPercent:                 wrapperspb.UInt32(100),
	}
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), buildSet(t, nil, c))
	for range 4 {
		p.get(t, "svc", "/")
	}
	for range 10 {
		if resp, _ := p.get(t, "svc", "/"); resp.StatusCode != 200 {
			t.Fatalf("ejected host still answers: %d from %s", resp.StatusCode, resp.Header.Get("X-Backend"))
		}
	}
	healthy.Store(true)
	time.Sleep(220 * time.Millisecond) // base_ejection_time
	seen := map[string]bool{}
	for range 4 {
		resp, _ := p.get(t, "svc", "/")
		seen[resp.Header.Get("X-Backend")] = true
	}
	if !seen["bad"] {
		t.Fatal("ejected host did not return")
	}
}

func TestPassthroughToOriginalDst(t *testing.T) {
	b := backend(t, "orig", nil)
	pass := &clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}, LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
	table, err := Compile(routeConfig(vhost("allow_any", []string{"*"}, toCluster("allow_any", prefixMatch("/"), "PassthroughCluster"))))
	if err != nil {
		t.Fatal(err)
	}
	set := buildSet(t, nil, pass)
	h := NewHandler(func() *Table { return table }, Options{Upstreams: func() *upstream.Set { return set }})
	req := httptest.NewRequest("GET", "http://external.example/", nil)
	req = req.WithContext(WithOriginalDst(req.Context(), netip.MustParseAddrPort(addrOf(b))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Header().Get("X-Backend") != "orig" {
		t.Fatalf("%d from %q", rec.Code, rec.Header().Get("X-Backend"))
	}
}

func TestRetryBufferLimit(t *testing.T) {
	var calls atomic.Int32
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
		}
	})
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c", func(ra *routev3.RouteAction) {
		ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
	}))
	vh.PerRequestBufferLimitBytes = wrapperspb.UInt32(16)
	vh.IncludeAttemptCountInResponse = true
	p := newProxy(t, routeConfig(vh), buildSet(t, nil, staticCluster("c", addrOf(b))))
	post := func(body string) *http.Response {
		req, _ := http.NewRequest("POST", "http://x/", strings.NewReader(body))
		req.Host = "svc"
		resp, _ := p.do(t, req)
		return resp
	}
	if resp := post("small"); resp.StatusCode != 200 || resp.Header.Get("X-Envoy-Attempt-Count") != "2" {
		t.Fatalf("small body: %d after %q attempts", resp.StatusCode, resp.Header.Get("X-Envoy-Attempt-Count"))
	}
	calls.Store(0)
	if resp := post(strings.Repeat("x", 100)); resp.StatusCode != 503 || resp.Header.Get("X-Envoy-Attempt-Count") != "1" {
		t.Fatalf("body over the buffer limit was retried: %d after %q attempts", resp.StatusCode, resp.Header.Get("X-Envoy-Attempt-Count"))
	}
}

func TestPrefixRewriteByMatchKind(t *testing.T) {
	b := backend(t, "b", echo)
	rewrite := func(ra *routev3.RouteAction) { ra.PrefixRewrite = "/v2" }
	vh := vhost("vh", []string{"*"},
		toCluster("exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, "c", rewrite),
		toCluster("regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("/re/.*")}}, "c", rewrite),
		toCluster("prefix", prefixMatch("/p"), "c", rewrite),
	)
	p := newProxy(t, routeConfig(vh), buildSet(t, nil, staticCluster("c", addrOf(b))))
	for path, want := range map[string]string{"/exact?x=1": "/v2?x=1", "/re/a/b": "/v2", "/pets/1": "/v2ets/1"} {
		if resp, _ := p.get(t, "svc", path); resp.Header.Get("X-Path") != want {
			t.Errorf("%s rewritten to %q, want %q", path, resp.Header.Get("X-Path"), want)
		}
	}
}

func TestRetryReplaysStreamedBody(t *testing.T) {
	var calls atomic.Int32
	b := backend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", fmt.Sprint(len(body)))
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
		}
	})
	vh := vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c", func(ra *routev3.RouteAction) {
		ra.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}
	}))
	p := newProxy(t, routeConfig(vh), buildSet(t, nil, staticCluster("c", addrOf(b))))
	// A chunked body of unknown length, written in pieces.
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			pw.Write([]byte(strings.Repeat("y", 1000)))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://x/", pr)
	req.Host = "svc"
	resp, _ := p.do(t, req)
	if resp.StatusCode != 200 || resp.Header.Get("X-Len") != "10000" {
		t.Fatalf("retry of a streamed body: %d, upstream read %s bytes", resp.StatusCode, resp.Header.Get("X-Len"))
	}
}

func TestUpstreamServiceTimeUsesClock(t *testing.T) {
	b := backend(t, "b", nil)
	var ticks atomic.Int64
	clock := func(o *Options) {
		o.Now = func() time.Time { return time.Unix(0, 0).Add(time.Duration(ticks.Add(1)) * 7 * time.Millisecond) }
	}
	p := newProxy(t, routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))), buildSet(t, nil, staticCluster("c", addrOf(b))), clock)
	if resp, _ := p.get(t, "svc", "/"); resp.Header.Get("X-Envoy-Upstream-Service-Time") != "7" {
		t.Fatalf("x-envoy-upstream-service-time %q", resp.Header.Get("X-Envoy-Upstream-Service-Time"))
	}
}
