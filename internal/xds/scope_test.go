package xds

import (
	"slices"
	"strings"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func TestExported(t *testing.T) {
	tests := []struct {
		exportTo, defaults []string
		objNS, ns          string
		want               bool
	}{
		{nil, nil, "a", "b", true},
		{[]string{"*"}, nil, "a", "b", true},
		{[]string{"."}, nil, "a", "a", true},
		{[]string{"."}, nil, "a", "b", false},
		{[]string{"~"}, nil, "a", "a", false},
		{[]string{"b", "c"}, nil, "a", "c", true},
		{[]string{"b"}, nil, "a", "a", false},
		{nil, []string{"."}, "a", "b", false},
		{nil, []string{"."}, "a", "a", true},
		{[]string{"*"}, []string{"."}, "a", "b", true},
	}
	for _, tc := range tests {
		if got := exported(tc.exportTo, tc.defaults, tc.objNS, tc.ns); got != tc.want {
			t.Errorf("exported(%v, %v, %s, %s) = %v, want %v", tc.exportTo, tc.defaults, tc.objNS, tc.ns, got, tc.want)
		}
	}
}

func TestHostMatches(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"*", "a.b", true},
		{"a.b", "a.b", true},
		{"*.b", "a.b", true},
		{"*.b", "x.a.b", true},
		{"*.b", "b", false},
		{"*.a.b", "*.b", false},
		{"*.b", "*.a.b", true},
		{"a.b", "*.b", false},
	}
	for _, tc := range tests {
		if got := hostMatches(tc.pattern, tc.host); got != tc.want {
			t.Errorf("hostMatches(%q, %q) = %v", tc.pattern, tc.host, got)
		}
	}
}

func clusterNames(r *Resources) []string {
	var out []string
	for _, c := range r.Clusters {
		if strings.HasPrefix(c.Name, "outbound|") {
			out = append(out, c.Name)
		}
	}
	return out
}

func TestServiceVisibility(t *testing.T) {
	const private = "outbound|8080||private.secret.svc.cluster.local"
	tests := []struct {
		name    string
		proxyNS string
		mesh    *meshconfig.MeshConfig
		sidecar []model.Config[*networking.Sidecar]
		labels  map[string]string
		has     []string
		hasNot  []string
	}{
		{name: "exportTo dot hides from others", proxyNS: "default", hasNot: []string{private}, has: []string{"outbound|9080||reviews.default.svc.cluster.local"}},
		{name: "exportTo dot shows to own namespace", proxyNS: "secret", has: []string{private}},
		{name: "mesh default exportTo dot", proxyNS: "other", mesh: &meshconfig.MeshConfig{DefaultServiceExportTo: []string{"."}},
			hasNot: []string{"outbound|9080||reviews.default.svc.cluster.local", private}},
		{name: "namespace Sidecar limits egress", proxyNS: "default",
			sidecar: []model.Config[*networking.Sidecar]{cfg(model.KindSidecar, "default", "default", 1, &networking.Sidecar{
				Egress: []*networking.IstioEgressListener{{Hosts: []string{"./ratings.default.svc.cluster.local", "*/*.wikipedia.org"}}},
			})},
			has:    []string{"outbound|9080||ratings.default.svc.cluster.local", "outbound|443||*.wikipedia.org"},
			hasNot: []string{"outbound|9080||reviews.default.svc.cluster.local", "outbound|80||httpbin.org"}},
		{name: "workloadSelector Sidecar beats the namespace default", proxyNS: "default", labels: map[string]string{"app": "productpage"},
			sidecar: []model.Config[*networking.Sidecar]{
				cfg(model.KindSidecar, "default", "default", 1, &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"./ratings.default.svc.cluster.local"}}}}),
				cfg(model.KindSidecar, "default", "pp", 2, &networking.Sidecar{
					WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "productpage"}},
					Egress:           []*networking.IstioEgressListener{{Hosts: []string{"./reviews.default.svc.cluster.local"}}},
				}),
			},
			has: []string{"outbound|9080||reviews.default.svc.cluster.local"}, hasNot: []string{"outbound|9080||ratings.default.svc.cluster.local"}},
		{name: "non-matching selector falls back to the namespace default", proxyNS: "default", labels: map[string]string{"app": "productpage"},
			sidecar: []model.Config[*networking.Sidecar]{
				cfg(model.KindSidecar, "default", "default", 1, &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"./ratings.default.svc.cluster.local"}}}}),
				cfg(model.KindSidecar, "default", "other", 2, &networking.Sidecar{
					WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "other"}},
					Egress:           []*networking.IstioEgressListener{{Hosts: []string{"./reviews.default.svc.cluster.local"}}},
				}),
			},
			has: []string{"outbound|9080||ratings.default.svc.cluster.local"}, hasNot: []string{"outbound|9080||reviews.default.svc.cluster.local"}},
		{name: "root namespace Sidecar applies mesh-wide", proxyNS: "default",
			sidecar: []model.Config[*networking.Sidecar]{cfg(model.KindSidecar, "istio-system", "default", 1, &networking.Sidecar{
				Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*", "istio-system/*"}}},
			})},
			has:    []string{"outbound|9080||reviews.default.svc.cluster.local", "outbound|80||istio-ingressgateway.istio-system.svc.cluster.local"},
			hasNot: []string{private}},
		{name: "tilde namespace sees nothing", proxyNS: "default",
			sidecar: []model.Config[*networking.Sidecar]{cfg(model.KindSidecar, "default", "default", 1, &networking.Sidecar{
				Egress: []*networking.IstioEgressListener{{Hosts: []string{"~/*"}}},
			})},
			hasNot: []string{"outbound|9080||reviews.default.svc.cluster.local"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			push := bookinfo()
			if tc.mesh != nil {
				push.Mesh = tc.mesh
			}
			push.Sidecars = tc.sidecar
			proxy := productpageProxy()
			proxy.Namespace, proxy.ConfigNamespace = tc.proxyNS, tc.proxyNS
			if tc.labels != nil {
				proxy.Labels = tc.labels
			}
			r := Generate(push, proxy)
			validateAll(t, r)
			names := clusterNames(r)
			for _, n := range tc.has {
				if !slices.Contains(names, n) {
					t.Errorf("%s must be visible; clusters: %v", n, names)
				}
			}
			for _, n := range tc.hasNot {
				if slices.Contains(names, n) {
					t.Errorf("%s must be hidden", n)
				}
			}
		})
	}
}

func TestVirtualServiceExportTo(t *testing.T) {
	push := bookinfo()
	for i := range push.VirtualServices {
		if push.VirtualServices[i].Name == "reviews" {
			push.VirtualServices[i].Spec.ExportTo = []string{"."}
		}
	}
	for _, tc := range []struct {
		ns   string
		want string
	}{
		{"default", "jason"},
		{"other", "default"},
	} {
		proxy := productpageProxy()
		proxy.Namespace, proxy.ConfigNamespace = tc.ns, tc.ns
		r := Generate(push, proxy)
		vh := findVHost(findRoute(r, "9080"), reviewsHost+":9080")
		if got := vh.Routes[0].Name; got != tc.want {
			t.Errorf("proxy in %s: first route %q, want %q", tc.ns, got, tc.want)
		}
	}
}

func TestSidecarEgressPort(t *testing.T) {
	push := bookinfo()
	push.Sidecars = []model.Config[*networking.Sidecar]{cfg(model.KindSidecar, "default", "default", 1, &networking.Sidecar{
		Egress: []*networking.IstioEgressListener{
			{Port: &networking.SidecarPort{Number: 9090, Protocol: "GRPC", Name: "grpc"}, Hosts: []string{"./details.default.svc.cluster.local"}},
			{Hosts: []string{"./reviews.default.svc.cluster.local"}},
		},
	})}
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	if rc := findRoute(r, "9090"); findVHost(rc, "details.default.svc.cluster.local:9090") == nil {
		t.Errorf("details must be reachable on the egress listener's port 9090")
	}
	if rc := findRoute(r, "9080"); findVHost(rc, "details.default.svc.cluster.local:9080") != nil || findVHost(rc, reviewsHost+":9080") == nil {
		t.Errorf("on 9080 only reviews is exposed")
	}
}
