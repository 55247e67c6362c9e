package dataplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// testEngine stands in for internal/proxy/router and upstream: clusters are
// STATIC (first endpoint) or ORIGINAL_DST, routes match domains and
// prefixes and proxy with httputil.ReverseProxy.
type testEngine struct{}

type testUpstreams struct {
	addrs map[string]string
	info  map[string]ClusterInfo
	orig  map[string]bool
}

func (testEngine) BuildUpstreams(snap *config.Snapshot, _ Upstreams, _ config.Secrets, _ *slog.Logger) (Upstreams, error) {
	u := &testUpstreams{addrs: map[string]string{}, info: map[string]ClusterInfo{}, orig: map[string]bool{}}
	for name, c := range snap.Clusters {
		if c.GetType() == cluster.Cluster_ORIGINAL_DST {
			u.orig[name] = true
			continue
		}
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) == 0 || len(eps[0].GetLbEndpoints()) == 0 {
			return nil, fmt.Errorf("cluster %s: no endpoints", name)
		}
		sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		u.addrs[name] = net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))
		svc := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues()
		if len(svc) > 0 {
			f := svc[0].GetStructValue().GetFields()
			u.info[name] = ClusterInfo{ServiceHost: f["host"].GetStringValue(), ServiceName: f["name"].GetStringValue(), ServiceNamespace: f["namespace"].GetStringValue()}
		}
	}
	return u, nil
}

func (u *testUpstreams) DialTCP(ctx context.Context, c string, od netip.AddrPort) (net.Conn, Workload, error) {
	addr, ok := u.addrs[c]
	if u.orig[c] {
		addr, ok = od.String(), true
	}
	if !ok {
		return nil, Workload{}, fmt.Errorf("no cluster %s", c)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	return conn, Workload{Name: "backend", Namespace: "backend-ns"}, err
}

func (u *testUpstreams) ClusterInfo(c string) (ClusterInfo, bool) {
	i, ok := u.info[c]
	_, ok2 := u.addrs[c]
	return i, ok || ok2
}

func (u *testUpstreams) Release(Upstreams) {}

func (testEngine) CompileRoutes(rc *route.RouteConfiguration) (Routes, error) {
	if rc.GetName() == "bad" {
		return nil, fmt.Errorf("route table is invalid")
	}
	return rc, nil
}

type riKey struct{}

func (testEngine) WithRequestInfo(ctx context.Context) (context.Context, func() RequestInfo) {
	ri := &RequestInfo{}
	return context.WithValue(ctx, riKey{}, ri), func() RequestInfo { return *ri }
}

func (testEngine) NewHandler(routes func() Routes, ups func() Upstreams, _ *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri, _ := r.Context().Value(riKey{}).(*RequestInfo)
		if ri == nil {
			ri = &RequestInfo{}
		}
		rc, _ := routes().(*route.RouteConfiguration)
		host := stripPort(r.Host)
		for _, vh := range rc.GetVirtualHosts() {
			okHost := false
			for _, d := range vh.GetDomains() {
				if d == "*" || d == host || d == r.Host {
					okHost = true
				}
			}
			if !okHost {
				continue
			}
			for _, rt := range vh.GetRoutes() {
				if !strings.HasPrefix(r.URL.Path, rt.GetMatch().GetPrefix()) {
					continue
				}
				ri.RouteName = rt.GetName()
				ri.Operation = rt.GetDecorator().GetOperation()
				if dr := rt.GetDirectResponse(); dr != nil {
					w.WriteHeader(int(dr.GetStatus()))
					_, _ = w.Write([]byte(dr.GetBody().GetInlineString()))
					return
				}
				c := rt.GetRoute().GetCluster()
				up := ups().(*testUpstreams)
				ri.ClusterName = c
				ri.Cluster = up.info[c]
				addr, ok := up.addrs[c]
				if !ok {
					ri.ResponseFlags = "NC"
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				ri.UpstreamHost = addr
				rp := &httputil.ReverseProxy{
					Rewrite: func(pr *httputil.ProxyRequest) {
						pr.Out.URL.Scheme, pr.Out.URL.Host = "http", addr
						pr.Out.Host = r.Host
						pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
						pr.Out.Header["X-Forwarded-Proto"] = pr.In.Header["X-Forwarded-Proto"]
					},
					ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
						ri.ResponseFlags = "UF"
						w.WriteHeader(http.StatusServiceUnavailable)
					},
				}
				rp.ServeHTTP(w, r)
				return
			}
		}
		ri.ResponseFlags = "NR"
		w.WriteHeader(http.StatusNotFound)
	})
}

// freePort returns a loopback port nobody listens on.
func freePort(t testing.TB) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sockAddr(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port}}}}
}

func staticCluster(name, addr string) *cluster.Cluster {
	host, port, _ := net.SplitHostPort(addr)
	var p uint32
	fmt.Sscan(port, &p)
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
			LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: sockAddr(host, p)}}}},
		}}},
	}
}

func routeTo(name, clusterName string) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: name, VirtualHosts: []*route.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*route.Route{{
			Name:   "default",
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName}}},
		}},
	}}}
}

// hcmFilter builds an HTTP connection manager network filter; extra HTTP
// filters go before the router.
func hcmNetFilter(t testing.TB, cfg *hcmv3.HttpConnectionManager, filters ...*hcmv3.HttpFilter) *listener.Filter {
	t.Helper()
	if cfg == nil {
		cfg = &hcmv3.HttpConnectionManager{}
	}
	if cfg.StatPrefix == "" {
		cfg.StatPrefix = "test"
	}
	cfg.HttpFilters = append(filters, &hcmv3.HttpFilter{Name: routerFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}})
	return &listener.Filter{Name: hcmFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, cfg)}}
}

func rds(name string) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: name}}}
}

func tcpNetFilter(t testing.TB, clusterName string) *listener.Filter {
	return &listener.Filter{Name: tcpProxyFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpv3.TcpProxy{
		StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: clusterName}})}}
}

func statsHTTPFilter(t testing.TB, reporter string) *hcmv3.HttpFilter {
	v, _ := structpb.NewStruct(map[string]any{"reporter": reporter})
	return &hcmv3.HttpFilter{Name: statsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &xdstype.TypedStruct{TypeUrl: statsTypeURL, Value: v})}}
}

func statsNetFilter(t testing.TB, reporter string) *listener.Filter {
	v, _ := structpb.NewStruct(map[string]any{"reporter": reporter})
	return &listener.Filter{Name: statsFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, &xdstype.TypedStruct{TypeUrl: statsTypeURL, Value: v})}}
}

func realListener(name string, port uint32, chains ...*listener.FilterChain) *listener.Listener {
	return &listener.Listener{Name: name, Address: sockAddr("0.0.0.0", port), FilterChains: chains}
}

func tlsSocketOf(t testing.TB, ctx proto.Message) *core.TransportSocket {
	return &core.TransportSocket{Name: tlsSocket, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ctx)}}
}

// istioMutual is the inbound mTLS context of docs/xds.md.
func istioMutual() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
			}},
			AlpnProtocols: []string{"h2", "http/1.1"},
		},
	}
}

func newSnap() *config.Snapshot {
	return &config.Snapshot{
		Listeners: map[string]*listener.Listener{}, Routes: map[string]*route.RouteConfiguration{},
		Clusters: map[string]*cluster.Cluster{}, Endpoints: map[string]*endpoint.ClusterLoadAssignment{},
		Secrets: map[string]*tlsv3.Secret{}, Versions: map[string]string{},
	}
}

func testNode(name, ns string) *config.Node {
	return &config.Node{Mode: config.ModeSidecar, ID: "sidecar~127.0.0.1~" + name + "." + ns + "~" + ns + ".svc.cluster.local",
		PodName: name + "-pod", Namespace: ns, ServiceAccount: name, WorkloadName: name, ClusterID: "Kubernetes",
		TrustDomain: "cluster.local", Labels: map[string]string{"app": name, "version": "v1"}}
}

func newDP(t testing.TB, opts Options) *Dataplane {
	t.Helper()
	if opts.Node == nil {
		opts.Node = testNode("server", "default")
	}
	if opts.Engine == nil {
		opts.Engine = testEngine{}
	}
	opts.BindAddress = "127.0.0.1"
	if os.Getenv("DP_DEBUG") != "" {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// backend is a loopback HTTP server answering with its name and echoing
// selected request headers.
func backend(t testing.TB, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		for _, h := range []string{"X-Forwarded-Client-Cert", "X-Envoy-Peer-Metadata", "Traceparent", "X-B3-Traceid", "X-Jwt-Sub", "Authorization", "X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto"} {
			if v := r.Header.Get(h); v != "" {
				w.Header().Set("Echo-"+h, v)
			}
		}
		if d := r.URL.Query().Get("sleep"); d != "" {
			dd, _ := time.ParseDuration(d)
			time.Sleep(dd)
		}
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// testCA issues SPIFFE workload certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 100}

// issue returns a key pair for a SPIFFE ID and/or DNS names, with PEMs.
func (ca *testCA) issue(t testing.TB, spiffe string, dns ...string) (*tls.Certificate, []byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(sn), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, DNSNames: dns}
	if spiffe != "" {
		u, _ := url.Parse(spiffe)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &pair, certPEM, keyPEM
}

// testSecrets is a config.Secrets whose certificate can be swapped.
type testSecrets struct {
	mu   sync.Mutex
	cert *tls.Certificate
	pool *x509.CertPool
}

func (s *testSecrets) WorkloadCertificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert, nil
}

func (s *testSecrets) RootCAs() *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool
}

func get(t testing.TB, c *http.Client, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp, b.String()
}

type snapshotT = config.Snapshot

func runtimeGosched() { time.Sleep(time.Millisecond) }

type emptypbT = emptypb.Empty

func wrapperUInt32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func istioServiceMetadata(t testing.TB, host, name, ns string) *core.Metadata {
	s, err := structpb.NewStruct(map[string]any{"services": []any{map[string]any{"host": host, "name": name, "namespace": ns}}})
	if err != nil {
		t.Fatal(err)
	}
	return &core.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": s}}
}

// forEngines runs a test with the in-test engine and with DefaultEngine
// (the real router and clusters).
func forEngines(t *testing.T, f func(*testing.T, Engine)) {
	for _, e := range []struct {
		name string
		e    Engine
	}{{"test-engine", testEngine{}}, {"default-engine", DefaultEngine{}}} {
		t.Run(e.name, func(t *testing.T) { f(t, e.e) })
	}
}
