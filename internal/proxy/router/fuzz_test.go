package router

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// sampleConfig exercises most matchers and actions.
func sampleConfig(t testing.TB) *routev3.RouteConfiguration {
	sm := func(p *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: p}
	}
	vh := vhost("reviews", []string{"reviews", "reviews:9080", "*.example.com", "api.*"},
		toCluster("regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/r/[a-z]+/\d+`)}}, "c"),
		toCluster("headers", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/h"}, CaseSensitive: wrapperspb.Bool(false),
			Headers: []*routev3.HeaderMatcher{
				{Name: "end-user", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex("j.*n")}})},
				{Name: ":method", HeaderMatchSpecifier: sm(exactStr("GET"))},
				{Name: "x-range", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
			},
			QueryParameters: []*routev3.QueryParameterMatcher{{Name: "v", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "1"}}}}},
		}, "c", func(ra *routev3.RouteAction) {
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex("^/h(.*)$"), Substitution: `/x\1`}
			ra.Timeout = durationpb.New(time.Second)
		}),
		&routev3.Route{Name: "redirect", Match: prefixMatch("/old"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"}, HostRedirect: "x.example"}}},
		&routev3.Route{Name: "direct", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/healthz"}}, Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}},
		toCluster("default", prefixMatch("/"), "c"),
	)
	vh.RequestHeadersToAdd = []*corev3.HeaderValueOption{hdrOpt("x-via", "%REQ(:authority)%", 0)}
	return routeConfig(vh, vhost("any", []string{"*"}, toCluster("any", prefixMatch("/"), "c")))
}

func FuzzMatch(f *testing.F) {
	table, err := Compile(sampleConfig(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("GET", "reviews", "/r/abc/12", "", "jason", "")
	f.Add("GET", "v1.example.com", "/H/thing", "v=12", "john", "")
	f.Add("POST", "api.x:80", "/old/x", "", "", "1")
	f.Add("GET", "", "", "%zz", "\x00", "")
	f.Fuzz(func(t *testing.T, method, host, path, query, user, rng string) {
		req := &http.Request{Method: method, Host: host, URL: &url.URL{Path: path, RawQuery: query}, Header: http.Header{}}
		if user != "" {
			req.Header.Set("End-User", user)
		}
		if rng != "" {
			req.Header.Set("X-Range", rng)
		}
		vh1, r1 := table.Match(req)
		vh2, r2 := table.Match(req)
		if vh1 != vh2 || r1 != r2 {
			t.Fatalf("not deterministic: %s/%s then %s/%s", vh1, r1, vh2, r2)
		}
		if vh1 == "" {
			t.Fatalf("the catch-all virtual host did not match host %q", host)
		}
	})
}

func FuzzCompile(f *testing.F) {
	for _, rc := range []*routev3.RouteConfiguration{sampleConfig(f), routeConfig(vhost("v", []string{"*"}, toCluster("r", prefixMatch("/"), "c")))} {
		b, err := proto.Marshal(rc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "/r/abc/1")
	}
	empty := buildSet(f, nil)
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		var rc routev3.RouteConfiguration
		if err := proto.Unmarshal(data, &rc); err != nil {
			return
		}
		table, err := Compile(&rc)
		if err != nil {
			return
		}
		// A table that compiles serves requests without panicking (there
		// are no clusters, so nothing leaves the process).
		h := NewHandler(func() *Table { return table }, Options{Upstreams: func() *upstream.Set { return empty }})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond) // bounds fault delays
		defer cancel()
		for _, host := range []string{"reviews", "x.example.com", "other"} {
			req := httptest.NewRequest("GET", "http://"+host+"/", nil).WithContext(ctx)
			req.URL.Path = "/" + path
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code < 100 || rec.Code > 599 {
				t.Fatalf("status %d", rec.Code)
			}
		}
	})
}

func BenchmarkRoute(b *testing.B) {
	var routes []*routev3.Route
	for i := range 1000 {
		routes = append(routes, toCluster(fmt.Sprint("r", i), &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/api/v%d/", i)},
			Headers:       []*routev3.HeaderMatcher{{Name: "x-tenant", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactStr(fmt.Sprint("t", i))}}},
		}, "c"))
	}
	table, err := Compile(routeConfig(vhost("vh", []string{"svc", "svc:80"}, routes...)))
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "http://svc/api/v999/items?x=1", nil)
	req.Header.Set("X-Tenant", "t999")
	b.ReportAllocs()
	for b.Loop() {
		if _, r := table.Match(req); r != "r999" {
			b.Fatal(r)
		}
	}
}

func BenchmarkProxyHTTP(b *testing.B) {
	up := backend(b, "b", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	set := buildSet(b, nil, staticCluster("c", addrOf(up)))
	table, err := Compile(routeConfig(vhost("vh", []string{"*"}, toCluster("r", prefixMatch("/"), "c"))))
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandler(func() *Table { return table }, Options{Upstreams: func() *upstream.Set { return set }})
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "http://svc/", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
