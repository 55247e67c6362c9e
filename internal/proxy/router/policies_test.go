package router

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRoutePolicies(t *testing.T) {
	var calls atomic.Int32
	a := backend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/flaky" && calls.Add(1) == 1 {
			w.WriteHeader(503)
		}
	})
	b := backend(t, "b", nil)
	set := buildSet(t, nil, staticCluster("a", addrOf(a)), staticCluster("b", addrOf(b)))

	abort := anyOf(t, &faultv3HTTPFault{Abort: &faultv3Abort{ErrorType: &faultv3AbortHTTP{HttpStatus: 429}, Percentage: pct(100)},
		Headers: []*routev3.HeaderMatcher{{Name: "x-chaos", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}})
	vh := vhost("vh", []string{"*"},
		toCluster("by-header", prefixMatch("/by-header"), "", func(ra *routev3.RouteAction) {
			ra.ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}
		}),
		toCluster("no-ws", prefixMatch("/no-ws"), "a", func(ra *routev3.RouteAction) {
			ra.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}
		}),
		toCluster("chaos", prefixMatch("/chaos"), "a"),
		toCluster("cors-off", prefixMatch("/cors-off"), "a"),
		toCluster("wrapped-optional", prefixMatch("/optional"), "a"),
		toCluster("flaky", prefixMatch("/flaky"), "a"),
	)
	vh.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)} // inherited by routes without one
	vh.Routes[2].TypedPerFilterConfig = map[string]*anypbAny{FaultFilterName: anyOf(t, &routev3.FilterConfig{Config: abort})}
	vh.Routes[3].TypedPerFilterConfig = map[string]*anypbAny{CORSFilterName: anyOf(t, &corsv3Policy{
		AllowOriginStringMatch: []*matcherv3StringMatcher{exactStr("*")},
		FilterEnabled:          &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 0}},
	})}
	vh.Routes[4].TypedPerFilterConfig = map[string]*anypbAny{
		"envoy.filters.http.lua": anyOf(t, &routev3.FilterConfig{IsOptional: true, Config: abort}),
		FaultFilterName:          anyOf(t, &routev3.FilterConfig{Disabled: true, Config: abort}),
	}
	p := newProxy(t, routeConfig(vh), set)

	for _, cl := range []string{"a", "b"} {
		if resp, _ := p.get(t, "svc", "/by-header", "x-cluster", cl); resp.Header.Get("X-Backend") != cl {
			t.Errorf("cluster_header %s: went to %q", cl, resp.Header.Get("X-Backend"))
		}
	}
	if resp, _ := p.get(t, "svc", "/by-header"); resp.StatusCode != 503 {
		t.Errorf("cluster_header without the header: %d", resp.StatusCode)
	}
	if resp, _ := p.get(t, "svc", "/chaos"); resp.StatusCode != 200 {
		t.Errorf("fault without its header: %d", resp.StatusCode)
	}
	if resp, _ := p.get(t, "svc", "/chaos", "x-chaos", "1"); resp.StatusCode != 429 {
		t.Errorf("fault with its header: %d", resp.StatusCode)
	}
	if resp, _ := p.get(t, "svc", "/cors-off", "Origin", "https://x"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS with filter_enabled 0%% answered")
	}
	if resp, _ := p.get(t, "svc", "/optional", "x-chaos", "1"); resp.StatusCode != 200 {
		t.Errorf("disabled fault config still aborts: %d", resp.StatusCode)
	}
	if resp, _ := p.get(t, "svc", "/flaky"); resp.StatusCode != 200 || p.lastInfo(t).Attempts != 2 {
		t.Errorf("virtual host retry policy not applied: %d", resp.StatusCode)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /no-ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("disabled websocket upgrade: %v %v", resp, err)
	}
	resp.Body.Close()
	// Unknown upgrade types are refused; h2c upgrades are dropped and the
	// request is served as plain HTTP/1.1.
	fmt.Fprintf(conn, "GET /chaos HTTP/1.1\r\nHost: svc\r\nUpgrade: spdy/3\r\nConnection: Upgrade\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 403 {
		t.Fatalf("unknown upgrade: %v %v", resp, err)
	}
	fmt.Fprintf(conn, "GET /chaos HTTP/1.1\r\nHost: svc\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("h2c upgrade: %v %v", resp, err)
	}
}
