package router

import (
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestVirtualHostMatching(t *testing.T) {
	rc := routeConfig(
		vhost("exact", []string{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080", "reviews", "10.0.0.1:9080"}, toCluster("r", prefixMatch("/"), "c")),
		vhost("suffix-long", []string{"*.api.example.com"}, toCluster("r", prefixMatch("/"), "c")),
		vhost("suffix", []string{"*.example.com"}, toCluster("r", prefixMatch("/"), "c")),
		vhost("prefix", []string{"foo.*"}, toCluster("r", prefixMatch("/"), "c")),
		vhost("any", []string{"*"}, toCluster("r", prefixMatch("/"), "c")),
	)
	table, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ host, want string }{
		{"reviews.default.svc.cluster.local", "exact"},
		{"REVIEWS.default.svc.cluster.local", "exact"},
		{"reviews.default.svc.cluster.local:9080", "exact"},
		{"reviews", "exact"},
		{"10.0.0.1:9080", "exact"},
		{"reviews:1234", "any"},
		{"v1.api.example.com", "suffix-long"},
		{"www.example.com", "suffix"},
		{"example.com", "any"}, // the wildcard needs at least one character
		{"foo.bar", "prefix"},
		{"foo.example.com", "suffix"}, // suffix wildcards win over prefix ones
		{"other", "any"},
	}
	for _, tc := range cases {
		if got := table.virtualHostFor(tc.host); got == nil || got.name != tc.want {
			t.Errorf("%s: got %v, want %s", tc.host, got, tc.want)
		}
	}
	rc.IgnorePortInHostMatching = true
	rc.VirtualHosts = rc.VirtualHosts[:1]
	table, _ = Compile(rc)
	if vh := table.virtualHostFor("reviews:1234"); vh == nil || vh.name != "exact" {
		t.Errorf("ignore_port_in_host_matching: reviews:1234 got %v", vh)
	}
	if vh := table.virtualHostFor("other:80"); vh != nil {
		t.Errorf("other:80 matched %s without a catch-all", vh.name)
	}
}

func header(name string, m func(*routev3.HeaderMatcher)) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	m(h)
	return h
}

func TestRouteMatching(t *testing.T) {
	strMatch := func(sm *matcherv3.StringMatcher) func(*routev3.HeaderMatcher) {
		return func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
	}
	routes := []*routev3.Route{
		toCluster("exact-path", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, "c"),
		toCluster("case-insensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/CI"}, CaseSensitive: wrapperspb.Bool(false)}, "c"),
		toCluster("regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/items/[0-9]+`)}}, "c"),
		toCluster("method", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/m"},
			Headers: []*routev3.HeaderMatcher{header(":method", strMatch(exactStr("POST")))}}, "c"),
		toCluster("scheme-authority", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/sa"},
			Headers: []*routev3.HeaderMatcher{
				header(":scheme", strMatch(exactStr("http"))),
				header(":authority", strMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".local"}})),
			}}, "c"),
		toCluster("header-prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/h"},
			Headers: []*routev3.HeaderMatcher{header("end-user", strMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "jason"}}))}}, "c"),
		toCluster("header-regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/h"},
			Headers: []*routev3.HeaderMatcher{header("x-version", strMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex("v[12]")}}))}}, "c"),
		toCluster("header-absent", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/h"},
			Headers: []*routev3.HeaderMatcher{header("x-canary", func(h *routev3.HeaderMatcher) {
				h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
				h.InvertMatch = true
			})}}, "c"),
		toCluster("query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/q"},
			QueryParameters: []*routev3.QueryParameterMatcher{{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exactStr("1")}}}}, "c"),
		toCluster("query-present", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/q"},
			QueryParameters: []*routev3.QueryParameterMatcher{{Name: "trace", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}}}}, "c"),
		toCluster("fallback", prefixMatch("/"), "c"),
	}
	table, err := Compile(routeConfig(vhost("vh", []string{"*"}, routes...)))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, target, host string
		hdr                  []string
		want                 string
	}{
		{"GET", "/exact", "h", nil, "exact-path"},
		{"GET", "/exact?x=1", "h", nil, "exact-path"},
		{"GET", "/exact/more", "h", nil, "fallback"},
		{"GET", "/ci/thing", "h", nil, "case-insensitive"},
		{"GET", "/items/42", "h", nil, "regex"},
		{"GET", "/items/42/x", "h", nil, "fallback"}, // the regex matches the whole path
		{"POST", "/m", "h", nil, "method"},
		{"GET", "/m", "h", nil, "fallback"},
		{"GET", "/sa", "svc.local", nil, "scheme-authority"},
		{"GET", "/sa", "svc.remote", nil, "fallback"},
		{"GET", "/h", "h", []string{"end-user", "jason-b"}, "header-prefix"},
		{"GET", "/h", "h", []string{"x-version", "v2", "x-canary", "1"}, "header-regex"},
		{"GET", "/h", "h", []string{"x-version", "v3", "x-canary", "1"}, "fallback"},
		{"GET", "/h", "h", nil, "header-absent"},
		{"GET", "/q?debug=1", "h", nil, "query"},
		{"GET", "/q?debug=2", "h", nil, "fallback"},
		{"GET", "/q?trace", "h", nil, "query-present"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, "http://"+tc.host+tc.target, nil)
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			req.Header.Set(tc.hdr[i], tc.hdr[i+1])
		}
		if _, got := table.Match(req); got != tc.want {
			t.Errorf("%s %s %v: route %q, want %q", tc.method, tc.target, tc.hdr, got, tc.want)
		}
	}
}

func TestCompileRejects(t *testing.T) {
	base := func() *routev3.RouteConfiguration {
		return routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))
	}
	route := func(rc *routev3.RouteConfiguration) *routev3.Route { return rc.VirtualHosts[0].Routes[0] }
	action := func(rc *routev3.RouteConfiguration) *routev3.RouteAction { return route(rc).GetRoute() }
	cases := []struct {
		name   string
		mutate func(*routev3.RouteConfiguration)
		want   string
	}{
		{"bad regex", func(rc *routev3.RouteConfiguration) {
			route(rc).Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("(")}}
		}, "regex"},
		{"runtime fraction", func(rc *routev3.RouteConfiguration) {
			route(rc).Match.RuntimeFraction = &corev3RuntimeFractionalPercent
		}, "runtime_fraction"},
		{"unknown filter config", func(rc *routev3.RouteConfiguration) {
			route(rc).TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.lua": {}}
		}, "envoy.filters.http.lua"},
		{"hedge policy", func(rc *routev3.RouteConfiguration) { action(rc).HedgePolicy = &routev3.HedgePolicy{} }, "hedge_policy"},
		{"retry priority", func(rc *routev3.RouteConfiguration) {
			action(rc).RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: "envoy.retry_priorities.previous_priorities"}}
		}, "retry_priority"},
		{"zero weights", func(rc *routev3.RouteConfiguration) {
			action(rc).ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}},
			}}
		}, "total weight"},
		{"unknown header operator", func(rc *routev3.RouteConfiguration) {
			route(rc).RequestHeadersToAdd = []*corev3.HeaderValueOption{hdrOpt("x", "%UPSTREAM_METADATA(a)%", 0)}
		}, "UPSTREAM_METADATA"},
		{"duplicate domain", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts = append(rc.VirtualHosts, vhost("vh2", []string{"*"}))
		}, "more than one virtual host"},
		{"middle wildcard", func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Domains = []string{"a.*.com"} }, "wildcard"},
		{"require tls", func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].RequireTls = routev3.VirtualHost_ALL }, "require_tls"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := base()
			tc.mutate(rc)
			_, err := Compile(rc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

var corev3RuntimeFractionalPercent = corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 50}}
