package xdsclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/certs"
	"github.com/mizzen-mesh/mizzen/internal/proxy/certs/certstest"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient/xdstest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const nodeID = "sidecar~10.1.0.5~cart-1.shop~shop.svc.cluster.local"

// fakeDataplane records what it is given and rejects what reject says.
type fakeDataplane struct {
	mu      sync.Mutex
	active  *config.Snapshot
	applies int
	reject  func(*config.Snapshot) error
}

func (f *fakeDataplane) Apply(s *config.Snapshot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.reject != nil {
		if err := f.reject(s); err != nil {
			return err
		}
	}
	f.active = s
	return nil
}

func (f *fakeDataplane) snapshot() *config.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

func ads() *core.ConfigSource {
	return &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
}

func edsCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
	}
}

func endpoints(name string, ips ...string) *endpoint.ClusterLoadAssignment {
	var lbs []*endpoint.LbEndpoint
	for _, ip := range ips {
		lbs = append(lbs, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: 8080}}}},
		}}})
	}
	return &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func httpListener(t *testing.T, name, routeName string, sdsSecret string) *listener.Listener {
	t.Helper()
	m, err := anypb.New(&hcm.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: routeName, ConfigSource: ads()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	fc := &listener.FilterChain{Filters: []*listener.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: m}}}}
	if sdsSecret != "" {
		tc, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: sdsSecret, SdsConfig: ads()}, {Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		fc.TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: tc}}
	}
	return &listener.Listener{
		Name: name,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 8080}}}},
		FilterChains: []*listener.FilterChain{fc},
	}
}

func routes(name, clusterName string) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: name, VirtualHosts: []*route.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName}}},
		}},
	}}}
}

// setup runs a CA, a control plane and a client with a fake data plane.
func setup(t *testing.T) (*xdstest.ControlPlane, *fakeDataplane, *xdsclient.Client, *prometheus.Registry) {
	t.Helper()
	ca := certstest.Start(t, 0)
	m, err := certs.New(certs.Options{CAAddress: ca.Addr, RootCertFile: ca.RootFile,
		TokenFile: ca.TokenFile(t, "shop", "cart"), Namespace: "shop", ServiceAccount: "cart", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	cp := xdstest.Start(t, ca)
	node, err := xdsclient.NewNode(xdsclient.NodeInput{Env: []string{
		"POD_NAME=cart-1", "POD_NAMESPACE=shop", "INSTANCE_IP=10.1.0.5", "SERVICE_ACCOUNT=cart"}})
	if err != nil {
		t.Fatal(err)
	}
	if node.ID != nodeID {
		t.Fatalf("node id %s", node.ID)
	}
	dp := &fakeDataplane{}
	c, err := xdsclient.New(xdsclient.Options{Address: cp.Addr, ServerName: "localhost", Node: node, Secrets: m,
		Dataplane: dp, Log: quiet, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collectors()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cp, dp, c, reg
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func v1(t *testing.T) map[resourcev3.Type][]types.Resource {
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType:  {edsCluster("outbound|80||a.shop.svc.cluster.local"), edsCluster("outbound|80||b.shop.svc.cluster.local")},
		resourcev3.EndpointType: {endpoints("outbound|80||a.shop.svc.cluster.local", "10.1.0.7"), endpoints("outbound|80||b.shop.svc.cluster.local", "10.1.0.8")},
		resourcev3.ListenerType: {httpListener(t, "0.0.0.0_80", "80", "")},
		resourcev3.RouteType:    {routes("80", "outbound|80||a.shop.svc.cluster.local")},
	}
}

// complete reports whether s holds everything of v1-like configs.
func complete(s *config.Snapshot, version string, clusters, eps, listeners, rts int) error {
	if s == nil {
		return errors.New("nothing applied")
	}
	for _, t := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		if s.Versions[t] != version {
			return fmt.Errorf("%s at version %q", t, s.Versions[t])
		}
	}
	if len(s.Clusters) != clusters || len(s.Endpoints) != eps || len(s.Listeners) != listeners || len(s.Routes) != rts {
		return fmt.Errorf("%d clusters, %d endpoints, %d listeners, %d routes", len(s.Clusters), len(s.Endpoints), len(s.Listeners), len(s.Routes))
	}
	return nil
}

func TestReceiveApplyAck(t *testing.T) {
	cp, dp, c, reg := setup(t)
	cp.Set(t, nodeID, "v1", v1(t))
	eventually(t, "the whole configuration applied", func() error { return complete(dp.snapshot(), "v1", 2, 2, 1, 1) })
	select {
	case <-c.Synced():
	default:
		t.Fatal("not synced after clusters and listeners were applied")
	}
	if !c.Connected() {
		t.Fatal("not connected")
	}
	if got := c.Snapshot(); got != dp.snapshot() {
		t.Fatal("the client's snapshot is not the one applied")
	}
	// Every type is ACKed: version v1 with the response's nonce.
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		eventually(t, "ACK of "+typ, func() error {
			for _, r := range cp.Requests(typ) {
				if r.GetVersionInfo() == "v1" && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil {
					return nil
				}
			}
			return fmt.Errorf("requests %v", cp.Requests(typ))
		})
	}
	// Endpoints and routes are requested by the names clusters and listeners use.
	eds := cp.Requests(resourcev3.EndpointType)
	if names := eds[len(eds)-1].GetResourceNames(); !slices.Equal(names, []string{"outbound|80||a.shop.svc.cluster.local", "outbound|80||b.shop.svc.cluster.local"}) {
		t.Fatalf("EDS names %v", names)
	}
	if rds := cp.Requests(resourcev3.RouteType); !slices.Equal(rds[len(rds)-1].GetResourceNames(), []string{"80"}) {
		t.Fatalf("RDS names %v", rds[len(rds)-1].GetResourceNames())
	}
	// The proxy presented its workload certificate.
	peers := cp.Peers()
	if len(peers) == 0 || peers[0] != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("client identities seen by the control plane: %v", peers)
	}
	if got := metric(t, reg, "mizzen_proxy_xds_connected"); got != 1 {
		t.Fatalf("connected gauge %v", got)
	}

	// A removed cluster takes its endpoints with it.
	res := v1(t)
	res[resourcev3.ClusterType] = res[resourcev3.ClusterType][:1]
	res[resourcev3.EndpointType] = res[resourcev3.EndpointType][:1]
	cp.Set(t, nodeID, "v2", res)
	eventually(t, "the removal applied", func() error { return complete(dp.snapshot(), "v2", 1, 1, 1, 1) })
}

// metric sums the series of a gauge or counter family in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func TestNackKeepsPreviousSnapshot(t *testing.T) {
	cp, dp, _, reg := setup(t)
	dp.reject = func(s *config.Snapshot) error {
		if _, bad := s.Listeners["0.0.0.0_81"]; bad {
			return errors.New("listener 0.0.0.0_81: unsupported filter envoy.filters.http.lua")
		}
		return nil
	}
	cp.Set(t, nodeID, "v1", v1(t))
	eventually(t, "v1 applied", func() error { return complete(dp.snapshot(), "v1", 2, 2, 1, 1) })

	res := v1(t)
	res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], httpListener(t, "0.0.0.0_81", "80", ""))
	cp.Set(t, nodeID, "v2", res)
	eventually(t, "the NACK", func() error {
		for _, r := range cp.Requests(resourcev3.ListenerType) {
			if r.GetErrorDetail() != nil {
				if !strings.Contains(r.GetErrorDetail().GetMessage(), "unsupported filter envoy.filters.http.lua") {
					return fmt.Errorf("NACK message %q", r.GetErrorDetail().GetMessage())
				}
				if r.GetVersionInfo() != "v1" || r.GetResponseNonce() == "" {
					return fmt.Errorf("NACK with version %q nonce %q, want the last accepted v1", r.GetVersionInfo(), r.GetResponseNonce())
				}
				return nil
			}
		}
		return errors.New("no NACK yet")
	})
	if s := dp.snapshot(); s.Versions[resourcev3.ListenerType] != "v1" || len(s.Listeners) != 1 {
		t.Fatalf("the rejected listeners are in force: %v", s.Versions)
	}
	if got := metric(t, reg, "mizzen_proxy_xds_rejects_total"); got < 1 {
		t.Fatalf("rejects counter %v", got)
	}
	// A fixed configuration is accepted again.
	cp.Set(t, nodeID, "v3", v1(t))
	eventually(t, "v3 applied", func() error { return complete(dp.snapshot(), "v3", 2, 2, 1, 1) })
}

func TestReconnectKeepsLastConfig(t *testing.T) {
	cp, dp, c, _ := setup(t)
	cp.Set(t, nodeID, "v1", v1(t))
	eventually(t, "v1 applied", func() error { return complete(dp.snapshot(), "v1", 2, 2, 1, 1) })
	applied := dp.snapshot()

	cp.Stop()
	eventually(t, "the client notices", func() error {
		if c.Connected() {
			return errors.New("still connected")
		}
		return nil
	})
	if dp.snapshot() != applied || c.Snapshot() != applied {
		t.Fatal("the configuration changed while the control plane was down")
	}
	// The control plane comes back (fresh, as after a restart) with news.
	cp.ForgetRequests()
	res := v1(t)
	res[resourcev3.RouteType] = []types.Resource{routes("80", "outbound|80||b.shop.svc.cluster.local")}
	cp.Set(t, nodeID, "v2", res)
	cp.Restart(t)
	eventually(t, "v2 applied after reconnecting", func() error { return complete(dp.snapshot(), "v2", 2, 2, 1, 1) })
	// The client resumed from the versions it held.
	first := cp.Requests(resourcev3.ClusterType)[0]
	if first.GetVersionInfo() != "v1" || first.GetNode().GetId() != nodeID {
		t.Fatalf("first request after reconnecting: version %q node %q", first.GetVersionInfo(), first.GetNode().GetId())
	}
	if eds := cp.Requests(resourcev3.EndpointType); len(eds) == 0 || len(eds[0].GetResourceNames()) != 2 {
		t.Fatalf("endpoints not resubscribed by name: %v", eds)
	}
}

func TestGatewaySecrets(t *testing.T) {
	cp, dp, _, _ := setup(t)
	res := v1(t)
	res[resourcev3.ListenerType] = []types.Resource{httpListener(t, "0.0.0.0_443", "80", "kubernetes://shop-cert")}
	res[resourcev3.SecretType] = []types.Resource{&tlsv3.Secret{Name: "kubernetes://shop-cert", Type: &tlsv3.Secret_TlsCertificate{
		TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "PEM"}}}}}}
	cp.Set(t, nodeID, "v1", res)
	eventually(t, "the secret applied", func() error {
		s := dp.snapshot()
		if s == nil || s.Secrets["kubernetes://shop-cert"] == nil {
			return errors.New("no secret")
		}
		return nil
	})
	sds := cp.Requests(resourcev3.SecretType)
	// default and ROOTCA are the proxy's own: never requested.
	if names := sds[len(sds)-1].GetResourceNames(); !slices.Equal(names, []string{"kubernetes://shop-cert"}) {
		t.Fatalf("SDS names %v", names)
	}
}
