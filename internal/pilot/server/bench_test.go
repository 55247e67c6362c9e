package server

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// benchPush is a mesh of n HTTP services with two endpoints each.
func benchPush(n int) *model.PushContext {
	p := &model.PushContext{Version: "1", DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: "istio-system",
		Endpoints: map[string][]*model.Endpoint{}}
	for i := 0; i < n; i++ {
		svc := &model.Service{Hostname: fmt.Sprintf("svc-%d.bench.svc.cluster.local", i), Name: fmt.Sprintf("svc-%d", i), Namespace: "bench",
			Addresses: []string{fmt.Sprintf("10.96.%d.%d", i/256, i%256)},
			Ports:     []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP, TargetPort: 8080}}}
		p.Services = append(p.Services, svc)
		for j := 1; j <= 2; j++ {
			p.Endpoints[model.ServiceKey(svc)] = append(p.Endpoints[model.ServiceKey(svc)], &model.Endpoint{
				Address: fmt.Sprintf("10.%d.%d.%d", 200+j, i/256, i%256), Port: 8080, ServicePort: 80, Ready: true, Namespace: "bench", TLSMode: "disabled"})
		}
	}
	model.SortServices(p.Services)
	return p
}

func benchProxy() *model.Proxy {
	return &model.Proxy{ID: "sidecar~10.100.0.1~p.bench~bench.svc.cluster.local", Type: model.SidecarProxy, IPs: []string{"10.100.0.1"},
		PodName: "p", Namespace: "bench", ServiceAccount: "sa-0", ConfigNamespace: "bench", InterceptionMode: model.InterceptionRedirect}
}

// BenchmarkProxyConfig splits the cost of one proxy's full configuration
// for 1000 services between translation and the server's interning and
// versioning.
func BenchmarkProxyConfig(b *testing.B) {
	push, proxy := benchPush(1000), benchProxy()
	b.Run("generate", func(b *testing.B) {
		for b.Loop() {
			_ = xds.Generate(push, proxy)
		}
	})
	res := xds.Generate(push, proxy)
	b.Run("intern", func(b *testing.B) {
		for b.Loop() {
			if _, err := internResources(res, map[string]bool{xds.ClusterType: true, xds.EndpointType: true, xds.ListenerType: true, xds.RouteType: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEqual(b *testing.B) {
	push, proxy := benchPush(1000), benchProxy()
	a, c := xds.Generate(push, proxy), xds.Generate(push, proxy)
	for b.Loop() {
		for i := range a.Clusters {
			if !proto.Equal(a.Clusters[i], c.Clusters[i]) {
				b.Fatal("differs")
			}
		}
		for i := range a.Endpoints {
			if !proto.Equal(a.Endpoints[i], c.Endpoints[i]) {
				b.Fatal("differs")
			}
		}
		for i := range a.Listeners {
			if !proto.Equal(a.Listeners[i], c.Listeners[i]) {
				b.Fatal("differs")
			}
		}
	}
	b.Logf("%d clusters %d endpoints %d listeners %d routes", len(a.Clusters), len(a.Endpoints), len(a.Listeners), len(a.Routes))
}
