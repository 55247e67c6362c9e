package router

import (
	"context"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// backend is a loopback upstream that names itself in X-Backend.
func backend(t testing.TB, name string, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func addrOf(srv *httptest.Server) string {
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func staticCluster(name string, addrs ...string) *clusterv3.Cluster {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
			}}},
		}}})
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}},
	}
}

func http2Cluster(c *clusterv3.Cluster) *clusterv3.Cluster {
	a, _ := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
	}}})
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{upstream.HTTPProtocolOptionsName: a}
	return c
}

func buildSet(t testing.TB, secrets config.Secrets, clusters ...*clusterv3.Cluster) *upstream.Set {
	t.Helper()
	snap := &config.Snapshot{Clusters: map[string]*clusterv3.Cluster{}}
	for _, c := range clusters {
		snap.Clusters[c.GetName()] = c
	}
	set, err := upstream.Build(snap, nil, secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// proxy is the router behind a loopback server speaking HTTP/1.1 and
// h2c.
type proxy struct {
	srv   *httptest.Server
	table atomic.Pointer[Table]
	set   atomic.Pointer[upstream.Set]
	infos chan *RequestInfo
}

func newProxy(t testing.TB, rc *routev3.RouteConfiguration, set *upstream.Set, mutate ...func(*Options)) *proxy {
	t.Helper()
	table, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{infos: make(chan *RequestInfo, 10000)}
	p.table.Store(table)
	p.set.Store(set)
	opts := Options{Upstreams: p.set.Load, Rand: rand.New(rand.NewPCG(1, 2))}
	for _, m := range mutate {
		m(&opts)
	}
	h := NewHandler(p.table.Load, opts)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, info := WithRequestInfo(r.Context())
		defer func() { p.infos <- info }()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	p.srv.Config.Protocols = new(http.Protocols)
	p.srv.Config.Protocols.SetHTTP1(true)
	p.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// lastInfo returns the RequestInfo of the latest finished request.
func (p *proxy) lastInfo(t testing.TB) *RequestInfo {
	t.Helper()
	var last *RequestInfo
	select {
	case last = <-p.infos:
	case <-time.After(5 * time.Second):
		t.Fatal("no request info")
	}
	for {
		select {
		case i := <-p.infos:
			last = i
		default:
			return last
		}
	}
}

func (p *proxy) do(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	u, _ := url.Parse(p.srv.URL)
	req.URL.Scheme, req.URL.Host = "http", u.Host
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (p *proxy) get(t testing.TB, host, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://x"+path, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return p.do(t, req)
}

// h2cClient speaks HTTP/2 with prior knowledge.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, n, a)
	}}}
}

// Route configuration builders.

func routeConfig(vhosts ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "test", VirtualHosts: vhosts}
}

func vhost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func toCluster(name string, m *routev3.RouteMatch, cluster string, mutate ...func(*routev3.RouteAction)) *routev3.Route {
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
	for _, f := range mutate {
		f(ra)
	}
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: ra}}
}

func exactStr(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: s} }

func hdrOpt(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
