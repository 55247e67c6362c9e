package xdsclient

import (
	"slices"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tlsSocket(t *testing.T, m proto.Message) *core.TransportSocket {
	return &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func sds(names ...string) []*tlsv3.SdsSecretConfig {
	var out []*tlsv3.SdsSecretConfig
	for _, n := range names {
		out = append(out, &tlsv3.SdsSecretConfig{Name: n})
	}
	return out
}

func TestReferencedNames(t *testing.T) {
	eds := func(name, service string) *cluster.Cluster {
		return &cluster.Cluster{Name: name, ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{ServiceName: service}}
	}
	clusters := map[string]*cluster.Cluster{
		"a":                  eds("a", ""),
		"b":                  eds("b", "b-service"),
		"PassthroughCluster": {Name: "PassthroughCluster", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST}},
		"egress": {Name: "egress", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STRICT_DNS},
			TransportSocketMatches: []*cluster.Cluster_TransportSocketMatch{{Name: "tlsMode-istio",
				TransportSocket: tlsSocket(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
					TlsCertificateSdsSecretConfigs: sds("default", "kubernetes://client-cert"),
					ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
						ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "kubernetes://client-cert-cacert"}}},
				}})}}},
	}
	if got := endpointNames(clusters); !slices.Equal(got, []string{"a", "b-service"}) {
		t.Errorf("endpoint names %v", got)
	}
	rds := func(name string) *listener.Filter {
		return &listener.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{
			TypedConfig: mustAny(t, &hcm.HttpConnectionManager{RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: name}}})}}
	}
	inline := &listener.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{
		TypedConfig: mustAny(t, &hcm.HttpConnectionManager{RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{}})}}
	tcp := &listener.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listener.Filter_TypedConfig{
		TypedConfig: mustAny(t, &tcpproxy.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: "a"}})}}
	listeners := map[string]*listener.Listener{
		"0.0.0.0_80": {Name: "0.0.0.0_80", FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{rds("80")}}, {Filters: []*listener.Filter{tcp}}},
			DefaultFilterChain: &listener.FilterChain{Filters: []*listener.Filter{rds("default-route")}}},
		"0.0.0.0_443": {Name: "0.0.0.0_443", FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{rds("https.443.shop.gw.istio-system"), rds("80")},
			TransportSocket: tlsSocket(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: sds("kubernetes://shop-cert"),
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "kubernetes://shop-cert-cacert"}},
			}}),
		}}},
		"virtualInbound": {Name: "virtualInbound", FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{inline},
			TransportSocket: tlsSocket(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: sds("default"),
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"}},
			}}),
		}}},
	}
	if got := routeNames(listeners); !slices.Equal(got, []string{"80", "default-route", "https.443.shop.gw.istio-system"}) {
		t.Errorf("route names %v", got)
	}
	got := secretNames(&config.Snapshot{Listeners: listeners, Clusters: clusters})
	want := []string{"kubernetes://client-cert", "kubernetes://client-cert-cacert", "kubernetes://shop-cert", "kubernetes://shop-cert-cacert"}
	if !slices.Equal(got, want) {
		t.Errorf("secret names %v, want %v (never default or ROOTCA)", got, want)
	}
}
