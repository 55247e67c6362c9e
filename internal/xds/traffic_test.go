package xds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane"
)

// backend serves its name over HTTP on a loopback address; it returns the
// port.
func backend(t *testing.T, ip, name string) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

// TestTrafficThroughDataplane runs a VirtualService (header match to v2,
// rewrite, default to v1) through Mizzen's data plane on loopback, with
// interception NONE, and checks where requests land.
func TestTrafficThroughDataplane(t *testing.T) {
	const proxyIP = "127.0.83.20"
	p1 := backend(t, "127.0.83.11", "v1")
	p2 := backend(t, "127.0.83.12", "v2")
	reviews := kubeSvc("reviews", "default", "10.96.0.11", httpPort(9080))
	ep := func(ip string, port uint32, version string) *model.Endpoint {
		e := pod(ip, "default", "reviews", version, "reviews", port, 9080)
		e.TLSMode = "disabled"
		return e
	}
	push := &model.PushContext{
		DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: "istio-system",
		Services:  []*model.Service{reviews},
		Endpoints: map[string][]*model.Endpoint{model.ServiceKey(reviews): {ep("127.0.83.11", p1, "v1"), ep("127.0.83.12", p2, "v2")}},
		DestinationRules: []model.Config[*networking.DestinationRule]{cfg(model.KindDestinationRule, "default", "reviews", 1, &networking.DestinationRule{
			Host:    "reviews",
			Subsets: []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
		})},
		VirtualServices: []model.Config[*networking.VirtualService]{cfg(model.KindVirtualService, "default", "reviews", 1, &networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{
				{Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"end-user": sm("exact", "jason")}}}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v2", 0)}}},
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/myapp")}}, Rewrite: &networking.HTTPRewrite{Uri: "/"}, Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v2", 0)}}},
				{Match: []*networking.HTTPMatchRequest{{Uri: sm("exact", "/teapot")}}, DirectResponse: &networking.HTTPDirectResponse{Status: 418}},
				{Route: []*networking.HTTPRouteDestination{{Destination: dest("reviews", "v1", 0)}}},
			},
		})},
	}
	proxy := productpageProxy()
	proxy.InterceptionMode = model.InterceptionNone
	proxy.IPs = []string{"127.0.83.21"}
	proxy.OutboundBindAddress = proxyIP

	r := Generate(push, proxy)
	if len(r.Skipped) > 0 {
		t.Fatalf("skipped: %v", r.Skipped)
	}
	applyAll(t, r, &config.Node{Mode: config.ModeSidecar, ID: proxy.ID, Namespace: "default", IPs: proxy.IPs, Labels: proxy.Labels}, "")

	client := &http.Client{Timeout: 10 * time.Second}
	tests := []struct {
		path, host, user string
		status           int
		body             string
	}{
		{"/reviews/1", "reviews", "", 200, "v1 /reviews/1"},
		{"/reviews/1", "reviews.default.svc.cluster.local:9080", "jason", 200, "v2 /reviews/1"},
		{"/myapp/x", "reviews.default", "", 200, "v2 /x"},
		{"/teapot", "reviews", "", 418, ""},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest("GET", "http://"+proxyIP+":9080"+tc.path, nil)
		req.Host = tc.host
		if tc.user != "" {
			req.Header.Set("end-user", tc.user)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", tc.host, tc.path, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("%s %s (user %q): %d %q, want %d %q", tc.host, tc.path, tc.user, resp.StatusCode, body, tc.status, tc.body)
		}
	}
}

func applyAll(t *testing.T, r *Resources, node *config.Node, bind string) {
	t.Helper()
	snap := &config.Snapshot{
		Listeners: map[string]*listener.Listener{}, Routes: map[string]*route.RouteConfiguration{},
		Clusters: map[string]*cluster.Cluster{}, Endpoints: map[string]*endpoint.ClusterLoadAssignment{}, Secrets: map[string]*tlsv3.Secret{},
	}
	for _, x := range r.Listeners {
		snap.Listeners[x.Name] = x
	}
	for _, x := range r.Routes {
		snap.Routes[x.Name] = x
	}
	for _, x := range r.Clusters {
		snap.Clusters[x.Name] = x
	}
	for _, x := range r.Endpoints {
		snap.Endpoints[x.ClusterName] = x
	}
	for _, x := range r.Secrets {
		snap.Secrets[x.Name] = x
	}
	d, err := dataplane.New(dataplane.Options{Node: node, Secrets: noSecrets{}, BindAddress: bind})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if err := d.Apply(snap); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			t.Skipf("another process holds a port: %v", err)
		}
		t.Fatalf("apply: %v", err)
	}
}

// TestTrafficThroughGateway sends HTTP and HTTPS (SIMPLE, credential from
// a Secret) through the ingress gateway translation to a loopback backend.
func TestTrafficThroughGateway(t *testing.T) {
	const gwIP = "127.0.83.30"
	port := backend(t, "127.0.83.31", "productpage")
	cert, key := selfSigned(t)
	pp := kubeSvc("productpage", "default", "10.96.0.10", httpPort(9080))
	e := pod("127.0.83.31", "default", "productpage", "v1", "productpage", port, 9080)
	e.TLSMode = "disabled"
	push := &model.PushContext{
		DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: "istio-system",
		Services:    []*model.Service{pp},
		Endpoints:   map[string][]*model.Endpoint{model.ServiceKey(pp): {e}},
		Credentials: map[string]*model.Credential{"istio-system/bookinfo-cred": {CertChain: cert, PrivateKey: key}},
		Gateways: []model.Config[*networking.Gateway]{cfg(model.KindGateway, "default", "bookinfo-gateway", 1, &networking.Gateway{
			Selector: map[string]string{"istio": "ingressgateway"},
			Servers: []*networking.Server{
				{Port: &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"}, Hosts: []string{"*"}},
				{Port: &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"}, Hosts: []string{"bookinfo.example.com"},
					Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: "bookinfo-cred"}},
			},
		})},
		VirtualServices: []model.Config[*networking.VirtualService]{cfg(model.KindVirtualService, "default", "bookinfo", 1, &networking.VirtualService{
			Hosts: []string{"*"}, Gateways: []string{"bookinfo-gateway"},
			Http: []*networking.HTTPRoute{{
				Match: []*networking.HTTPMatchRequest{{Uri: sm("exact", "/productpage")}},
				Route: []*networking.HTTPRouteDestination{{Destination: dest("productpage", "", 9080)}},
			}},
		})},
	}
	proxy := ingressProxy()
	proxy.GatewayPortMap = map[uint32]uint32{80: 18080, 443: 18443}
	r := Generate(push, proxy)
	if len(r.Skipped) > 0 {
		t.Fatalf("skipped: %v", r.Skipped)
	}
	applyAll(t, r, &config.Node{Mode: config.ModeRouter, ID: proxy.ID, Namespace: proxy.Namespace, Labels: proxy.Labels}, gwIP)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "bookinfo.example.com"},
	}}
	for _, tc := range []struct {
		url    string
		status int
		body   string
	}{
		{"http://" + gwIP + ":18080/productpage", 200, "productpage /productpage"},
		{"http://" + gwIP + ":18080/other", 404, ""},
		{"https://" + gwIP + ":18443/productpage", 200, "productpage /productpage"},
	} {
		req, _ := http.NewRequest("GET", tc.url, nil)
		req.Host = "bookinfo.example.com"
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.url, resp.StatusCode, body, tc.status, tc.body)
		}
	}
}
