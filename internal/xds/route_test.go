package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cors "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

const reviewsHost = "reviews.default.svc.cluster.local"

// reviewsRoutes translates one VirtualService for reviews (replacing the
// fixture's) and returns the routes of reviews' virtual host on 9080.
func reviewsRoutes(t *testing.T, vs *networking.VirtualService, proxy *model.Proxy) ([]*route.Route, *Resources) {
	t.Helper()
	push := bookinfo()
	if vs.Hosts == nil {
		vs.Hosts = []string{"reviews"}
	}
	push.VirtualServices = []model.Config[*networking.VirtualService]{cfg(model.KindVirtualService, "default", "test", 1, vs)}
	if proxy == nil {
		proxy = productpageProxy()
	}
	r := Generate(push, proxy)
	validateAll(t, r)
	vh := findVHost(findRoute(r, "9080"), reviewsHost+":9080")
	if vh == nil {
		t.Fatal("reviews virtual host missing")
	}
	return vh.Routes, r
}

func one(t *testing.T, routes []*route.Route) *route.Route {
	t.Helper()
	if len(routes) != 1 {
		t.Fatalf("got %d routes, want 1: %v", len(routes), routes)
	}
	return routes[0]
}

func toV1(extra func(*networking.HTTPRoute)) *networking.VirtualService {
	hr := &networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}}
	extra(hr)
	return &networking.VirtualService{Http: []*networking.HTTPRoute{hr}}
}

func withMatch(m *networking.HTTPMatchRequest) *networking.VirtualService {
	return toV1(func(hr *networking.HTTPRoute) { hr.Match = []*networking.HTTPMatchRequest{m} })
}

func TestHTTPRouteMatch(t *testing.T) {
	tests := []struct {
		name  string
		match *networking.HTTPMatchRequest
		check func(t *testing.T, m *route.RouteMatch)
	}{
		{"uri exact", &networking.HTTPMatchRequest{Uri: sm("exact", "/a")}, func(t *testing.T, m *route.RouteMatch) {
			if m.GetPath() != "/a" {
				t.Errorf("path = %q", m.GetPath())
			}
		}},
		{"uri prefix", &networking.HTTPMatchRequest{Uri: sm("prefix", "/api")}, func(t *testing.T, m *route.RouteMatch) {
			if m.GetPrefix() != "/api" {
				t.Errorf("prefix = %q", m.GetPrefix())
			}
		}},
		{"uri regex", &networking.HTTPMatchRequest{Uri: sm("regex", "/v[0-9]+/.*")}, func(t *testing.T, m *route.RouteMatch) {
			if m.GetSafeRegex().GetRegex() != "/v[0-9]+/.*" {
				t.Errorf("safe_regex = %v", m.GetSafeRegex())
			}
		}},
		{"ignoreUriCase", &networking.HTTPMatchRequest{Uri: sm("prefix", "/API"), IgnoreUriCase: true}, func(t *testing.T, m *route.RouteMatch) {
			if m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue() {
				t.Errorf("case_sensitive = %v", m.GetCaseSensitive())
			}
		}},
		{"headers exact prefix regex present", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{
			"x-a": sm("exact", "1"), "x-b": sm("prefix", "p"), "x-c": sm("regex", "r.*"), "x-d": {},
		}}, func(t *testing.T, m *route.RouteMatch) {
			h := m.GetHeaders()
			if len(h) != 4 || h[0].GetStringMatch().GetExact() != "1" || h[1].GetStringMatch().GetPrefix() != "p" ||
				h[2].GetStringMatch().GetSafeRegex().GetRegex() != "r.*" || !h[3].GetPresentMatch() {
				t.Errorf("headers = %v", h)
			}
		}},
		{"withoutHeaders inverts", &networking.HTTPMatchRequest{WithoutHeaders: map[string]*networking.StringMatch{"x-debug": sm("exact", "1")}}, func(t *testing.T, m *route.RouteMatch) {
			if h := m.GetHeaders(); len(h) != 1 || !h[0].InvertMatch || h[0].Name != "x-debug" {
				t.Errorf("headers = %v", h)
			}
		}},
		{"method authority scheme as pseudo headers", &networking.HTTPMatchRequest{Method: sm("exact", "GET"), Authority: sm("prefix", "reviews"), Scheme: sm("exact", "http")}, func(t *testing.T, m *route.RouteMatch) {
			var names []string
			for _, h := range m.GetHeaders() {
				names = append(names, h.Name)
			}
			if !slices.Equal(names, []string{":method", ":authority", ":scheme"}) {
				t.Errorf("headers = %v", names)
			}
		}},
		{"query params", &networking.HTTPMatchRequest{QueryParams: map[string]*networking.StringMatch{"a": sm("exact", "1"), "b": sm("regex", "x+"), "c": {}}}, func(t *testing.T, m *route.RouteMatch) {
			q := m.GetQueryParameters()
			if len(q) != 3 || q[0].GetStringMatch().GetExact() != "1" || q[1].GetStringMatch().GetSafeRegex().GetRegex() != "x+" || !q[2].GetPresentMatch() {
				t.Errorf("query = %v", q)
			}
		}},
		{"no uri is prefix slash", &networking.HTTPMatchRequest{}, func(t *testing.T, m *route.RouteMatch) {
			if m.GetPrefix() != "/" {
				t.Errorf("prefix = %q", m.GetPrefix())
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes, _ := reviewsRoutes(t, withMatch(tc.match), nil)
			tc.check(t, one(t, routes).Match)
		})
	}
}

// TestHTTPRouteCallerSelection: matches that do not apply to the caller
// (port, sourceLabels, sourceNamespace, gateways) drop their route; a VS
// bound only to a gateway leaves the sidecar on the default route.
func TestHTTPRouteCallerSelection(t *testing.T) {
	tests := []struct {
		name      string
		vs        *networking.VirtualService
		wantRoute string // cluster of the only route
	}{
		{"port matches", withMatch(&networking.HTTPMatchRequest{Port: 9080}), "outbound|9080|v1|" + reviewsHost},
		{"port differs", &networking.VirtualService{Http: []*networking.HTTPRoute{
			{Match: []*networking.HTTPMatchRequest{{Port: 1234}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
			{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v2", 0)}}},
		}}, "outbound|9080|v2|" + reviewsHost},
		{"sourceLabels match", withMatch(&networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "productpage"}}), "outbound|9080|v1|" + reviewsHost},
		{"sourceLabels differ", &networking.VirtualService{Http: []*networking.HTTPRoute{
			{Match: []*networking.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "other"}}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
			{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v3", 0)}}},
		}}, "outbound|9080|v3|" + reviewsHost},
		{"sourceNamespace differs", &networking.VirtualService{Http: []*networking.HTTPRoute{
			{Match: []*networking.HTTPMatchRequest{{SourceNamespace: "other"}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
			{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v3", 0)}}},
		}}, "outbound|9080|v3|" + reviewsHost},
		{"gateway-only VS leaves the mesh default", &networking.VirtualService{Gateways: []string{"bookinfo-gateway"}, Http: []*networking.HTTPRoute{
			{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
		}}, "outbound|9080||" + reviewsHost},
		{"explicit mesh gateway", &networking.VirtualService{Gateways: []string{"bookinfo-gateway", "mesh"}, Http: []*networking.HTTPRoute{
			{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
		}}, "outbound|9080|v1|" + reviewsHost},
		{"match gateways override", &networking.VirtualService{Gateways: []string{"mesh"}, Http: []*networking.HTTPRoute{
			{Match: []*networking.HTTPMatchRequest{{Gateways: []string{"bookinfo-gateway"}}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
			{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v2", 0)}}},
		}}, "outbound|9080|v2|" + reviewsHost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes, _ := reviewsRoutes(t, tc.vs, nil)
			if got := one(t, routes).GetRoute().GetCluster(); got != tc.wantRoute {
				t.Errorf("cluster = %q, want %q", got, tc.wantRoute)
			}
		})
	}
}

func TestHTTPRouteActions(t *testing.T) {
	tests := []struct {
		name  string
		vs    *networking.VirtualService
		check func(t *testing.T, r *route.Route)
	}{
		{"rewrite uri and authority", toV1(func(hr *networking.HTTPRoute) {
			hr.Rewrite = &networking.HTTPRewrite{Uri: "/v2/", Authority: "new.example"}
		}), func(t *testing.T, r *route.Route) {
			if r.GetRoute().PrefixRewrite != "/v2/" || r.GetRoute().GetHostRewriteLiteral() != "new.example" {
				t.Errorf("action = %v", r.GetRoute())
			}
		}},
		{"uriRegexRewrite", toV1(func(hr *networking.HTTPRoute) {
			hr.Rewrite = &networking.HTTPRewrite{UriRegexRewrite: &networking.RegexRewrite{Match: "^/old/(.*)$", Rewrite: `/new/\1`}}
		}), func(t *testing.T, r *route.Route) {
			rr := r.GetRoute().GetRegexRewrite()
			if rr.GetPattern().GetRegex() != "^/old/(.*)$" || rr.GetSubstitution() != `/new/\1` {
				t.Errorf("regex_rewrite = %v", rr)
			}
		}},
		{"redirect", &networking.VirtualService{Http: []*networking.HTTPRoute{{Redirect: &networking.HTTPRedirect{
			Uri: "/x", Authority: "a.example", RedirectPort: &networking.HTTPRedirect_Port{Port: 8443}, Scheme: "https", RedirectCode: 308,
		}}}}, func(t *testing.T, r *route.Route) {
			rd := r.GetRedirect()
			if rd.GetPathRedirect() != "/x" || rd.HostRedirect != "a.example" || rd.PortRedirect != 8443 || rd.GetSchemeRedirect() != "https" || rd.ResponseCode != route.RedirectAction_PERMANENT_REDIRECT {
				t.Errorf("redirect = %v", rd)
			}
		}},
		{"directResponse", &networking.VirtualService{Http: []*networking.HTTPRoute{{DirectResponse: &networking.HTTPDirectResponse{
			Status: 503, Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_String_{String_: "down"}},
		}}}}, func(t *testing.T, r *route.Route) {
			if r.GetDirectResponse().Status != 503 || r.GetDirectResponse().GetBody().GetInlineString() != "down" {
				t.Errorf("direct_response = %v", r.GetDirectResponse())
			}
		}},
		{"weighted split with zero weight dropped", &networking.VirtualService{Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
			{Destination: dest("reviews", "v1", 0), Weight: 75}, {Destination: dest("reviews", "v2", 0), Weight: 25}, {Destination: dest("reviews", "v3", 0), Weight: 0},
		}}}}, func(t *testing.T, r *route.Route) {
			wc := r.GetRoute().GetWeightedClusters().GetClusters()
			if len(wc) != 2 || wc[0].Weight.GetValue() != 75 || wc[1].Weight.GetValue() != 25 || wc[1].Name != "outbound|9080|v2|"+reviewsHost {
				t.Errorf("weighted clusters = %v", wc)
			}
		}},
		{"destination port and other host", &networking.VirtualService{Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
			{Destination: dest("details.default.svc.cluster.local", "", 9090)},
		}}}}, func(t *testing.T, r *route.Route) {
			if r.GetRoute().GetCluster() != "outbound|9090||details.default.svc.cluster.local" {
				t.Errorf("cluster = %q", r.GetRoute().GetCluster())
			}
		}},
		{"timeout and retries with status codes", toV1(func(hr *networking.HTTPRoute) {
			hr.Timeout = durationpb.New(3 * time.Second)
			hr.Retries = &networking.HTTPRetry{Attempts: 4, PerTryTimeout: durationpb.New(time.Second), RetryOn: "gateway-error,503,504,reset", Backoff: durationpb.New(50 * time.Millisecond)}
		}), func(t *testing.T, r *route.Route) {
			a := r.GetRoute()
			rp := a.GetRetryPolicy()
			if rp.GetRetryBackOff().GetBaseInterval().AsDuration() != 50*time.Millisecond || rp.GetRetryHostPredicate()[0].GetName() != "envoy.retry_host_predicates.previous_hosts" {
				t.Errorf("backoff and previous hosts = %v", rp)
			}
			if a.Timeout.AsDuration() != 3*time.Second || rp.NumRetries.GetValue() != 4 || rp.PerTryTimeout.AsDuration() != time.Second ||
				rp.RetryOn != "gateway-error,retriable-status-codes,reset" || !slices.Equal(rp.RetriableStatusCodes, []uint32{503, 504}) {
				t.Errorf("action = %v", a)
			}
		}},
		{"attempts 0 disables retries", toV1(func(hr *networking.HTTPRoute) { hr.Retries = &networking.HTTPRetry{Attempts: 0} }), func(t *testing.T, r *route.Route) {
			if r.GetRoute().GetRetryPolicy() != nil {
				t.Errorf("retry policy = %v", r.GetRoute().GetRetryPolicy())
			}
		}},
		{"default timeout and retries", toV1(func(*networking.HTTPRoute) {}), func(t *testing.T, r *route.Route) {
			if r.GetRoute().GetTimeout().AsDuration() != 0 || r.GetRoute().GetRetryPolicy().GetNumRetries().GetValue() != 2 {
				t.Errorf("Istio's defaults: no timeout, 2 retries; got %v", r.GetRoute())
			}
		}},
		{"fault abort grpc", toV1(func(hr *networking.HTTPRoute) {
			hr.Fault = &networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{ErrorType: &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "UNAVAILABLE"}}}
		}), func(t *testing.T, r *route.Route) {
			f := &fault.HTTPFault{}
			if err := r.TypedPerFilterConfig[FilterFault].UnmarshalTo(f); err != nil {
				t.Fatal(err)
			}
			if f.GetAbort().GetGrpcStatus() != 14 || f.GetAbort().GetPercentage().GetNumerator() != 1000000 {
				t.Errorf("fault = %v", f)
			}
		}},
		{"fault delay legacy percent", toV1(func(hr *networking.HTTPRoute) {
			hr.Fault = &networking.HTTPFaultInjection{Delay: &networking.HTTPFaultInjection_Delay{Percent: 30, HttpDelayType: &networking.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(time.Second)}}}
		}), func(t *testing.T, r *route.Route) {
			f := &fault.HTTPFault{}
			if err := r.TypedPerFilterConfig[FilterFault].UnmarshalTo(f); err != nil {
				t.Fatal(err)
			}
			if f.GetDelay().GetFixedDelay().AsDuration() != time.Second || f.GetDelay().GetPercentage().GetNumerator() != 300000 {
				t.Errorf("fault = %v", f)
			}
		}},
		{"mirrors", toV1(func(hr *networking.HTTPRoute) {
			hr.Mirror = dest("ratings", "", 0)
			hr.MirrorPercent = wrapperspb.UInt32(50)
			hr.Mirrors = []*networking.HTTPMirrorPolicy{{Destination: dest("details", "", 9080)}}
		}), func(t *testing.T, r *route.Route) {
			m := r.GetRoute().GetRequestMirrorPolicies()
			if len(m) != 2 || m[0].Cluster != "outbound|9080||ratings.default.svc.cluster.local" || m[0].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 500000 ||
				m[1].Cluster != "outbound|9080||details.default.svc.cluster.local" || m[1].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 1000000 {
				t.Errorf("mirrors = %v", m)
			}
		}},
		{"cors", toV1(func(hr *networking.HTTPRoute) {
			hr.CorsPolicy = &networking.CorsPolicy{AllowOrigins: []*networking.StringMatch{sm("prefix", "https://")}, ExposeHeaders: []string{"x-a", "x-b"}}
		}), func(t *testing.T, r *route.Route) {
			c := &cors.CorsPolicy{}
			if err := r.TypedPerFilterConfig[FilterCORS].UnmarshalTo(c); err != nil {
				t.Fatal(err)
			}
			if c.GetAllowOriginStringMatch()[0].GetPrefix() != "https://" || c.ExposeHeaders != "x-a,x-b" {
				t.Errorf("cors = %v", c)
			}
		}},
		{"headers on route", toV1(func(hr *networking.HTTPRoute) {
			hr.Headers = &networking.Headers{Response: &networking.Headers_HeaderOperations{Add: map[string]string{"x-r": "1"}, Remove: []string{"server"}}}
		}), func(t *testing.T, r *route.Route) {
			if len(r.ResponseHeadersToAdd) != 1 || r.ResponseHeadersToAdd[0].Header.Key != "x-r" || !slices.Equal(r.ResponseHeadersToRemove, []string{"server"}) {
				t.Errorf("route = %v", r)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes, _ := reviewsRoutes(t, tc.vs, nil)
			tc.check(t, one(t, routes))
		})
	}
}

func TestHTTPRouteHashPolicy(t *testing.T) {
	push := bookinfo()
	r := Generate(push, productpageProxy())
	vh := findVHost(findRoute(r, "9080"), "ratings.default.svc.cluster.local:9080")
	hp := vh.Routes[0].GetRoute().GetHashPolicy()
	if len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != "x-user" {
		t.Errorf("hash_policy = %v", hp)
	}
}

// TestHTTPRouteSkipped: invalid parts are dropped and reported, the rest of
// the VirtualService still routes.
func TestHTTPRouteSkipped(t *testing.T) {
	vs := &networking.VirtualService{Http: []*networking.HTTPRoute{
		{Match: []*networking.HTTPMatchRequest{{Uri: sm("regex", "(unclosed")}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
		{Delegate: &networking.Delegate{Name: "child", Namespace: "default"}},
		{Match: []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/")}}, Fault: &networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 99}}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
		{Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{":status": sm("exact", "200")}}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
		{Match: []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/r")}}, Retries: &networking.HTTPRetry{Attempts: 1, RetryOn: "5xx,bogus"}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
		{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v2", 0)}}},
	}}
	routes, r := reviewsRoutes(t, vs, nil)
	if one(t, routes).GetRoute().GetCluster() != "outbound|9080|v2|"+reviewsHost {
		t.Errorf("valid route lost")
	}
	var reasons []string
	for _, s := range r.Skipped {
		if s.Kind == "VirtualService" && s.Name == "test" {
			reasons = append(reasons, s.Reason)
		}
	}
	joined := strings.Join(reasons, "\n")
	for _, want := range []string{"http[0]: invalid uri regex", "http[1]: delegate", "http[2]: fault abort httpStatus 99", `http[3]: header ":status"`, `http[4]: unknown retryOn "bogus"`} {
		if !strings.Contains(joined, want) {
			t.Errorf("skipped reasons %q lack %q", joined, want)
		}
	}
}

func TestVirtualServiceConflictOldestWins(t *testing.T) {
	push := bookinfo()
	push.VirtualServices = []model.Config[*networking.VirtualService]{
		cfg(model.KindVirtualService, "default", "newer", 5, toV1(func(hr *networking.HTTPRoute) { hr.Route[0].Destination.Subset = "v2" })),
		cfg(model.KindVirtualService, "default", "older", 1, toV1(func(*networking.HTTPRoute) {})),
	}
	for i := range push.VirtualServices {
		push.VirtualServices[i].Spec.Hosts = []string{"reviews"}
	}
	model.SortConfigs(push.VirtualServices)
	r := Generate(push, productpageProxy())
	vh := findVHost(findRoute(r, "9080"), reviewsHost+":9080")
	if got := one(t, vh.Routes).GetRoute().GetCluster(); got != "outbound|9080|v1|"+reviewsHost {
		t.Errorf("cluster = %q, want the oldest VirtualService's", got)
	}
	found := false
	for _, s := range r.Skipped {
		found = found || (s.Name == "newer" && strings.Contains(s.Reason, "default/older"))
	}
	if !found {
		t.Errorf("conflict not reported: %v", r.Skipped)
	}
}

func TestVirtualHostDomains(t *testing.T) {
	tests := []struct {
		proxyNS string
		want    []string
	}{
		{"default", []string{reviewsHost, "reviews", "reviews.default", "reviews.default.svc", "10.96.0.11"}},
		{"other", []string{reviewsHost, "reviews.default", "reviews.default.svc", "10.96.0.11"}},
	}
	for _, tc := range tests {
		t.Run(tc.proxyNS, func(t *testing.T) {
			proxy := productpageProxy()
			proxy.Namespace, proxy.ConfigNamespace = tc.proxyNS, tc.proxyNS
			r := Generate(bookinfo(), proxy)
			rc := findRoute(r, "9080")
			vh := findVHost(rc, reviewsHost+":9080")
			if !slices.Equal(vh.Domains, tc.want) {
				t.Errorf("domains = %v\nwant %v", vh.Domains, tc.want)
			}
			// Hosts with a port match without it: the domains are bare.
			if !rc.GetIgnorePortInHostMatching() {
				t.Error("ignore_port_in_host_matching is not set")
			}
		})
	}
}

func TestVirtualServiceHostOutsideRegistry(t *testing.T) {
	push := bookinfo()
	push.VirtualServices = append(push.VirtualServices, cfg(model.KindVirtualService, "default", "external", 9, &networking.VirtualService{
		Hosts: []string{"api.partner.example"},
		Http:  []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: dest("httpbin.org", "", 80)}}}},
	}))
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	for _, port := range []string{"80", "9080"} {
		vh := findVHost(findRoute(r, port), "api.partner.example:"+port)
		if vh == nil {
			t.Fatalf("route %s: no virtual host for the VirtualService's external host", port)
		}
		if !slices.Equal(vh.Domains, []string{"api.partner.example"}) || one(t, vh.Routes).GetRoute().GetCluster() != "outbound|80||httpbin.org" {
			t.Errorf("route %s: virtual host = %v", port, vh)
		}
	}
}

func TestDelegateVirtualService(t *testing.T) {
	push := bookinfo()
	push.VirtualServices = []model.Config[*networking.VirtualService]{
		cfg(model.KindVirtualService, "default", "root", 1, &networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/api"), Headers: map[string]*networking.StringMatch{"x-team": sm("exact", "a")}}}, Delegate: &networking.Delegate{Name: "child", Namespace: "team"}},
				{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v3", 0)}}},
			},
		}),
		cfg(model.KindVirtualService, "team", "child", 2, &networking.VirtualService{
			Http: []*networking.HTTPRoute{
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/api/v2")}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews.default.svc.cluster.local", "v2", 0)}}},
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("exact", "/other")}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews.default.svc.cluster.local", "v2", 0)}}},
				{Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"x-team": sm("exact", "b")}}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews.default.svc.cluster.local", "v2", 0)}}},
				{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews.default.svc.cluster.local", "v1", 0)}}},
			},
		}),
	}
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	routes := findVHost(findRoute(r, "9080"), reviewsHost+":9080").Routes
	type got struct{ prefix, cluster string }
	var gots []got
	for _, rt := range routes {
		gots = append(gots, got{rt.Match.GetPrefix(), rt.GetRoute().GetCluster()})
		if rt.Match.GetPrefix() != "/" && (len(rt.Match.Headers) != 1 || rt.Match.Headers[0].GetStringMatch().GetExact() != "a") {
			t.Errorf("root header match lost: %v", rt.Match)
		}
	}
	want := []got{{"/api/v2", "outbound|9080|v2|" + reviewsHost}, {"/api", "outbound|9080|v1|" + reviewsHost}, {"/", "outbound|9080|v3|" + reviewsHost}}
	if !slices.Equal(gots, want) {
		t.Errorf("routes = %v, want %v", gots, want)
	}
	var reasons []string
	for _, s := range r.Skipped {
		reasons = append(reasons, s.Name+": "+s.Reason)
	}
	joined := strings.Join(reasons, "\n")
	for _, w := range []string{"child: http[1]: uri is not within the root's", `child: http[2]: header "x-team" conflicts`} {
		if !strings.Contains(joined, w) {
			t.Errorf("skipped %q lacks %q", joined, w)
		}
	}
}
