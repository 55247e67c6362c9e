package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// fakeDiscovery serves a hand-built PushContext and checks nodes like
// discovery does: the node's namespace and service account must be the
// certificate's.
type fakeDiscovery struct {
	push    atomic.Pointer[model.PushContext]
	mu      sync.Mutex
	invalid []string
	builds  atomic.Int64
}

func (f *fakeDiscovery) Snapshot() *model.PushContext { return f.push.Load() }

func (f *fakeDiscovery) BuildProxy(node *corev3.Node, ns, sa string) (*model.Proxy, error) {
	f.builds.Add(1)
	md := node.GetMetadata().GetFields()
	if got := md["NAMESPACE"].GetStringValue(); got != ns {
		return nil, fmt.Errorf("node namespace %q is not the certificate's %q", got, ns)
	}
	if got := md["SERVICE_ACCOUNT"].GetStringValue(); got != sa {
		return nil, fmt.Errorf("node service account %q is not the certificate's %q", got, sa)
	}
	parts := strings.Split(node.GetId(), "~")
	if len(parts) != 4 {
		return nil, fmt.Errorf("bad node id %q", node.GetId())
	}
	return &model.Proxy{ID: node.GetId(), Type: model.NodeType(parts[0]), IPs: []string{parts[1]}, Namespace: ns, ServiceAccount: sa, ConfigNamespace: ns}, nil
}

func (f *fakeDiscovery) ReportInvalid(kind, ns, name, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalid = append(f.invalid, kind+"/"+ns+"/"+name+": "+reason)
}

func (f *fakeDiscovery) invalids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalid...)
}

var ads = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}

// fakeGenerate is a tiny translation: an EDS cluster per service port,
// its endpoints, one listener on 80 whose routes "80" hold a virtual host
// per VirtualService (those labelled invalid are skipped).
func fakeGenerate(push *model.PushContext, p *model.Proxy) *xds.Resources {
	res := &xds.Resources{}
	for _, svc := range push.Services {
		for _, port := range svc.Ports {
			name := xds.ClusterName(xds.Outbound, port.Port, "", svc.Hostname)
			res.Clusters = append(res.Clusters, &clusterv3.Cluster{Name: name,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: name}})
		}
	}
	res.Endpoints = fakeEndpoints(push, p, nil)
	rc := &routev3.RouteConfiguration{Name: "80"}
	for _, vs := range push.VirtualServices {
		if vs.Labels["invalid"] != "" {
			res.Skipped = append(res.Skipped, xds.Skipped{Kind: string(vs.Kind), Namespace: vs.Namespace, Name: vs.Name, Reason: vs.Labels["invalid"]})
			continue
		}
		vh := &routev3.VirtualHost{Name: vs.Name, Domains: vs.Spec.GetHosts()}
		for _, h := range vs.Spec.GetHttp() {
			for _, d := range h.GetRoute() {
				vh.Routes = append(vh.Routes, &routev3.Route{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{
						Cluster: xds.ClusterName(xds.Outbound, 80, "", d.GetDestination().GetHost())}}}})
			}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	res.Routes = []*routev3.RouteConfiguration{rc}
	h, err := anypb.New(&hcm.HttpConnectionManager{StatPrefix: "outbound_80",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{ConfigSource: ads, RouteConfigName: "80"}}})
	if err != nil {
		panic(err)
	}
	res.Listeners = []*listenerv3.Listener{{Name: "0.0.0.0_80", FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: h}}}}}}}
	return res
}

// fakeEndpoints returns the load assignments of the named clusters (all
// when names is nil).
func fakeEndpoints(push *model.PushContext, _ *model.Proxy, names []string) []*endpointv3.ClusterLoadAssignment {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []*endpointv3.ClusterLoadAssignment
	for _, svc := range push.Services {
		for _, port := range svc.Ports {
			name := xds.ClusterName(xds.Outbound, port.Port, "", svc.Hostname)
			if names != nil && !want[name] {
				continue
			}
			cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
			var lbs []*endpointv3.LbEndpoint
			for _, ep := range push.EndpointsOf(svc) {
				if ep.ServicePort != port.Port {
					continue
				}
				lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: ep.Address, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: ep.Port}}}}}}})
			}
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
			out = append(out, cla)
		}
	}
	return out
}

// pki is a mesh root and what tests issue from it.
type pki struct {
	root   *ca.Root
	signer *ca.Signer
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	now := time.Now()
	certPEM, keyPEM, err := ca.NewSelfSignedRoot(now)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.ParseRoot(certPEM, keyPEM, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{root: root, signer: &ca.Signer{Root: root}}
}

func (p *pki) serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	c, err := p.root.IssueServingCert([]string{"istiod.istio-system.svc"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{*c}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: p.root.RootPool(), MinVersion: tls.VersionTLS12}
}

// clientTLS returns a client configuration with a workload certificate
// for ns/sa (none when ns is empty).
func (p *pki) clientTLS(t testing.TB, ns, sa string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.root.RootPool(), ServerName: "istiod.istio-system.svc", MinVersion: tls.VersionTLS12}
	if ns == "" {
		return cfg
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := p.signer.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		ca.Identity{Namespace: ns, ServiceAccount: sa}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(strings.Join(chain, "")), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg
}

// testNode is a sidecar node in ns with service account sa.
func testNode(pod, ns, sa string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": ns, "SERVICE_ACCOUNT": sa, "NAME": pod})
	return &corev3.Node{Id: "sidecar~10.0.0.1~" + pod + "." + ns + "~" + ns + ".svc.cluster.local", Metadata: md}
}
