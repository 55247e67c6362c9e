package xds

import (
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// largeMesh has n HTTP services of 3 endpoints each across 10 namespaces,
// a DestinationRule with two subsets and a VirtualService for every tenth.
func largeMesh(n int) *model.PushContext {
	push := bookinfo()
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("ns%d", i%10)
		name := fmt.Sprintf("svc%d", i)
		svc := kubeSvc(name, ns, fmt.Sprintf("10.100.%d.%d", i/256, i%256), httpPort(8080), model.Port{Name: "grpc", Port: 9000, Protocol: model.ProtocolGRPC})
		push.Services = append(push.Services, svc)
		for j := 0; j < 3; j++ {
			ip := fmt.Sprintf("10.200.%d.%d", i/64, (i%64)*4+j)
			push.Endpoints[model.ServiceKey(svc)] = append(push.Endpoints[model.ServiceKey(svc)],
				pod(ip, ns, name, fmt.Sprintf("v%d", j%2+1), name, 8080, 8080), pod(ip, ns, name, fmt.Sprintf("v%d", j%2+1), name, 9000, 9000))
		}
		if i%10 == 0 {
			push.DestinationRules = append(push.DestinationRules, cfg(model.KindDestinationRule, ns, name, i, &networking.DestinationRule{
				Host: name, Subsets: []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
			}))
			push.VirtualServices = append(push.VirtualServices, cfg(model.KindVirtualService, ns, name, i, &networking.VirtualService{
				Hosts: []string{name},
				Http: []*networking.HTTPRoute{{
					Match: []*networking.HTTPMatchRequest{{Uri: sm("prefix", "/api")}},
					Route: []*networking.HTTPRouteDestination{{Destination: dest(name, "v1", 8080), Weight: 80}, {Destination: dest(name, "v2", 8080), Weight: 20}},
				}},
			}))
		}
	}
	model.SortServices(push.Services)
	model.SortConfigs(push.DestinationRules)
	model.SortConfigs(push.VirtualServices)
	return push
}

func TestLargeMesh(t *testing.T) {
	r := Generate(largeMesh(50), productpageProxy())
	validateAll(t, r)
	if c := findCluster(r, "outbound|8080|v2|svc40.ns0.svc.cluster.local"); c == nil {
		t.Errorf("subset cluster of a generated service missing")
	}
}

// BenchmarkGenerate translates a 1000-service mesh for one sidecar.
func BenchmarkGenerate(b *testing.B) {
	push := largeMesh(1000)
	proxy := productpageProxy()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := Generate(push, proxy)
		if len(r.Clusters) < 2000 {
			b.Fatalf("only %d clusters", len(r.Clusters))
		}
	}
}

// BenchmarkGenerateEndpoints is an endpoint-only push of 10 clusters of a
// 1000-service mesh.
func BenchmarkGenerateEndpoints(b *testing.B) {
	push := largeMesh(1000)
	proxy := productpageProxy()
	var names []string
	for i := 0; i < 10; i++ {
		names = append(names, fmt.Sprintf("outbound|8080||svc%d.ns%d.svc.cluster.local", i*7, (i*7)%10))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got := GenerateEndpoints(push, proxy, names); len(got) != 10 {
			b.Fatalf("%d assignments", len(got))
		}
	}
}
