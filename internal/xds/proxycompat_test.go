package xds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"syscall"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane"
	"github.com/mizzen-mesh/mizzen/internal/proxy/router"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

type noSecrets struct{}

func (noSecrets) WorkloadCertificate() (*tls.Certificate, error) { return nil, errors.New("none") }
func (noSecrets) RootCAs() *x509.CertPool                        { return x509.NewCertPool() }

// TestProxyAcceptsTranslation feeds what translation produces for a mesh
// with every route feature to Mizzen's own proxy: its router compiles every
// RouteConfiguration and its upstream builds every cluster, so nothing is
// NACKed.
func TestProxyAcceptsTranslation(t *testing.T) {
	svc := func(name string, port uint32, proto model.Protocol) *model.Service {
		return &model.Service{Hostname: name + ".default.svc.cluster.local", Name: name, Namespace: "default",
			Addresses: []string{"10.96.0." + string(rune('1'+len(name)%8))}, Selector: map[string]string{"app": name},
			Ports: []model.Port{{Name: "p", Port: port, Protocol: proto}}}
	}
	push := &model.PushContext{
		Mesh: &meshconfig.MeshConfig{}, DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: "istio-system",
		Services: []*model.Service{svc("a", 80, model.ProtocolHTTP), svc("b", 80, model.ProtocolHTTP), svc("c", 9000, model.ProtocolGRPC), svc("d", 5432, model.ProtocolTCP)},
		Endpoints: map[string][]*model.Endpoint{
			"b.default.svc.cluster.local/default": {{Address: "10.0.0.2", Port: 8080, ServicePort: 80, Labels: map[string]string{"app": "b", "version": "v1"}, Namespace: "default", ServiceAccount: "b", TLSMode: "istio", Ready: true}},
		},
		Credentials: map[string]*model.Credential{"istio-system/cred": {CertChain: []byte("c"), PrivateKey: []byte("k"), CACert: []byte("ca")}},
	}
	model.SortServices(push.Services)
	str := func(v string) *networking.StringMatch {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: v}}
	}
	push.DestinationRules = []model.Config[*networking.DestinationRule]{{
		Meta: model.Meta{Namespace: "default", Name: "b"},
		Spec: &networking.DestinationRule{Host: "b", TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
				HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &networking.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{Name: "s"}},
			}}},
			ConnectionPool:   &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{MaxRequestsPerConnection: 3}},
			OutlierDetection: &networking.OutlierDetection{ConsecutiveGatewayErrors: nil},
		}, Subsets: []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}}},
	}}
	push.VirtualServices = []model.Config[*networking.VirtualService]{{
		Meta: model.Meta{Namespace: "default", Name: "a"},
		Spec: &networking.VirtualService{Hosts: []string{"a", "ext.example.com"}, Gateways: []string{"mesh", "istio-system/gw"}, Http: []*networking.HTTPRoute{
			{
				Match: []*networking.HTTPMatchRequest{{Uri: str("/x"), Headers: map[string]*networking.StringMatch{"x-a": str("1")}, Method: str("G"),
					QueryParams: map[string]*networking.StringMatch{"q": str("")}, WithoutHeaders: map[string]*networking.StringMatch{"x-b": {}}, IgnoreUriCase: true}},
				Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "b", Subset: "v1"}, Weight: 70}, {Destination: &networking.Destination{Host: "b"}, Weight: 30,
					Headers: &networking.Headers{Request: &networking.Headers_HeaderOperations{Set: map[string]string{"x-w": "1"}}}}},
				Rewrite: &networking.HTTPRewrite{Uri: "/", Authority: "b"},
				Retries: &networking.HTTPRetry{Attempts: 2, RetryOn: "5xx,503,unavailable"},
				Fault: &networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{ErrorType: &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 418},
					Percentage: &networking.Percent{Value: 1}}},
				Mirror:     &networking.Destination{Host: "c"},
				CorsPolicy: &networking.CorsPolicy{AllowOrigins: []*networking.StringMatch{str("https://")}, AllowMethods: []string{"GET"}},
				Headers:    &networking.Headers{Response: &networking.Headers_HeaderOperations{Add: map[string]string{"x-r": "1"}, Remove: []string{"x-s"}}},
			},
			{Match: []*networking.HTTPMatchRequest{{Uri: str("/r")}}, Redirect: &networking.HTTPRedirect{Uri: "/s", RedirectCode: 307}},
			{Match: []*networking.HTTPMatchRequest{{Uri: str("/d")}}, DirectResponse: &networking.HTTPDirectResponse{Status: 204}},
			{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "b"}}}},
		}},
	}}
	push.Gateways = []model.Config[*networking.Gateway]{{
		Meta: model.Meta{Namespace: "istio-system", Name: "gw"},
		Spec: &networking.Gateway{Selector: map[string]string{"istio": "ingressgateway"}, Servers: []*networking.Server{
			{Port: &networking.Port{Number: 80, Protocol: "HTTP", Name: "http"}, Hosts: []string{"*"}},
			{Port: &networking.Port{Number: 443, Protocol: "HTTPS", Name: "https"}, Hosts: []string{"*"}, Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: "cred"}},
		}},
	}}
	proxies := []*model.Proxy{
		{Type: model.SidecarProxy, Namespace: "default", ConfigNamespace: "default", IPs: []string{"10.0.0.1"}, Labels: map[string]string{"app": "a"}},
		{Type: model.Router, Namespace: "istio-system", ConfigNamespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}},
	}
	for _, p := range proxies {
		t.Run(string(p.Type), func(t *testing.T) {
			r := Generate(push, p)
			if len(r.Skipped) > 0 {
				t.Errorf("skipped: %v", r.Skipped)
			}
			proxyAccepts(t, r)
		})
	}
}

// proxyAccepts fails when Mizzen's proxy would NACK the routes or clusters.
func proxyAccepts(t testing.TB, r *Resources) {
	t.Helper()
	for _, rc := range r.Routes {
		if _, err := router.Compile(rc); err != nil {
			t.Errorf("proxy router rejects route %s: %v", rc.Name, err)
		}
	}
	snap := &config.Snapshot{
		Listeners: map[string]*listener.Listener{}, Routes: map[string]*route.RouteConfiguration{},
		Clusters: map[string]*cluster.Cluster{}, Endpoints: map[string]*endpoint.ClusterLoadAssignment{}, Secrets: map[string]*tlsv3.Secret{},
	}
	for _, c := range r.Clusters {
		snap.Clusters[c.Name] = c
	}
	for _, e := range r.Endpoints {
		snap.Endpoints[e.ClusterName] = e
	}
	for _, s := range r.Secrets {
		snap.Secrets[s.Name] = s
	}
	if _, err := upstream.Build(snap, nil, noSecrets{}, nil); err != nil {
		t.Errorf("proxy upstream rejects the clusters: %v", err)
	}
}

func TestProxyAcceptsBookinfo(t *testing.T) {
	none := productpageProxy()
	none.InterceptionMode = model.InterceptionNone
	for _, p := range []*model.Proxy{productpageProxy(), none, ingressProxy()} {
		proxyAccepts(t, Generate(bookinfo(), p))
	}
}

// selfSigned returns a PEM key pair for gateway credentials.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bookinfo.example.com"}, DNSNames: []string{"bookinfo.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// TestProxyDataplaneAcceptsBookinfo applies the whole translation
// (listeners included) to Mizzen's data plane, binding on a loopback
// address of its own.
func TestProxyDataplaneAcceptsBookinfo(t *testing.T) {
	cert, key := selfSigned(t)
	none := productpageProxy()
	none.InterceptionMode = model.InterceptionNone
	none.InboundBindAddress, none.OutboundBindAddress, none.AppAddress = "127.0.83.2", "127.0.83.3", "127.0.83.4"
	for _, tc := range []struct {
		name  string
		proxy *model.Proxy
		mode  config.Mode
	}{
		{"sidecar", productpageProxy(), config.ModeSidecar},
		{"sidecar-none", none, config.ModeSidecar},
		{"ingressgateway", ingressProxy(), config.ModeRouter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			push := bookinfo()
			push.Credentials["istio-system/bookinfo-cred"] = &model.Credential{CertChain: cert, PrivateKey: key, CACert: cert}
			r := Generate(push, tc.proxy)
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
			d, err := dataplane.New(dataplane.Options{
				Node:    &config.Node{Mode: tc.mode, ID: tc.proxy.ID, Namespace: tc.proxy.Namespace, PodName: tc.proxy.PodName, IPs: tc.proxy.IPs, Labels: tc.proxy.Labels},
				Secrets: noSecrets{}, BindAddress: "127.0.83.1",
			})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := d.Apply(snap); err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					// Apply binds only after building everything: the
					// translation was accepted, another process holds a port.
					t.Skipf("translation accepted; binding failed: %v", err)
				}
				t.Errorf("data plane rejects the translation: %v", err)
			}
		})
	}
}
