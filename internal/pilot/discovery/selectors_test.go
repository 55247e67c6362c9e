package discovery

import (
	"context"
	"slices"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The mesh's discoverySelectors hide every object of the namespaces they
// do not select (except the root namespace); relabelling a namespace or
// changing the mesh config shows them again.
func TestDiscoverySelectors(t *testing.T) {
	svc := func(ns string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	}
	se := func(ns, host string) *networkingv1.ServiceEntry {
		return &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: ns}, Spec: networking.ServiceEntry{
			Hosts: []string{host}, Resolution: networking.ServiceEntry_DNS, Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}}}
	}
	c, kube, _, _ := fakeController(t, []any{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "in", Labels: map[string]string{"mesh": "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "out"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}},
		svc("in"), svc("out"), svc("istio-system"),
	}, []any{se("in", "in.example.com"), se("out", "out.example.com")})

	visible := func() []string {
		var out []string
		s := c.Snapshot()
		for _, sv := range s.Services {
			out = append(out, sv.Hostname)
		}
		for _, cfg := range s.ServiceEntries {
			out = append(out, "se:"+cfg.Namespace)
		}
		for ns := range s.NamespaceLabels {
			out = append(out, "ns:"+ns)
		}
		slices.Sort(out)
		return out
	}
	all := []string{"in.example.com", "ns:in", "ns:istio-system", "ns:out", "out.example.com", "se:in", "se:out",
		"web.in.svc.cluster.local", "web.istio-system.svc.cluster.local", "web.out.svc.cluster.local"}
	if got := visible(); !slices.Equal(got, all) {
		t.Fatalf("without selectors: %v", got)
	}

	m := DefaultMeshConfig()
	m.DiscoverySelectors = []*meshconfig.LabelSelector{{MatchLabels: map[string]string{"mesh": "enabled"}}}
	c.SetMesh(m)
	want := []string{"in.example.com", "ns:in", "ns:istio-system", "se:in", "web.in.svc.cluster.local", "web.istio-system.svc.cluster.local"}
	if got := visible(); !slices.Equal(got, want) {
		t.Fatalf("with selectors: %v, want %v", got, want)
	}

	ns, _ := kube.CoreV1().Namespaces().Get(context.Background(), "out", metav1.GetOptions{})
	ns.Labels = map[string]string{"mesh": "enabled"}
	if _, err := kube.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relabelled namespace", func() bool { return slices.Equal(visible(), all) })

	m = DefaultMeshConfig()
	m.DiscoverySelectors = []*meshconfig.LabelSelector{{MatchExpressions: []*meshconfig.LabelSelectorRequirement{
		{Key: "mesh", Operator: "DoesNotExist"}}}}
	c.SetMesh(m)
	want = []string{"ns:istio-system", "web.istio-system.svc.cluster.local"}
	if got := visible(); !slices.Equal(got, want) {
		t.Fatalf("with a DoesNotExist selector: %v, want %v", got, want)
	}
}
