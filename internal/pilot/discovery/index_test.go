package discovery

import (
	"reflect"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// A pod change names the hostnames whose endpoints it changes: Services
// whose slices list it and ServiceEntries selecting it; an unchanged pod
// is no change.
func TestPodChangeHostnames(t *testing.T) {
	ix := newIndex("cluster.local")
	ix.mesh = DefaultMeshConfig()
	ix.setService("app/web", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	ix.setSlice("app/web-1", &sliceInfo{Service: "app/web", Ports: []slicePort{{Name: "http", Port: 8080}},
		Eps: []sliceEndpoint{{Addresses: []string{"10.1.0.1"}, Ready: true, Pod: "app/web-1"}}})
	ix.setConfig(model.KindServiceEntry, "app/vms", model.Config[*networking.ServiceEntry]{
		Meta: model.Meta{Kind: model.KindServiceEntry, Name: "vms", Namespace: "app"},
		Spec: &networking.ServiceEntry{Hosts: []string{"vm.internal"}, Resolution: networking.ServiceEntry_STATIC,
			Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"role": "vm"}}}})
	ix.build("1", "istio-system", nil)

	pod := &podInfo{Name: "web-1", Namespace: "app", IPs: []string{"10.1.0.1"}, Labels: map[string]string{"app": "web"}, Ready: true}
	steps := []struct {
		name    string
		pod     *podInfo
		changed bool
		hosts   []string
	}{
		{"added", pod, true, []string{"web.app.svc.cluster.local"}},
		{"unchanged", pod, false, nil},
		{"now selected by the ServiceEntry", &podInfo{Name: "web-1", Namespace: "app", IPs: []string{"10.1.0.1"},
			Labels: map[string]string{"app": "web", "role": "vm"}, Ready: true}, true, []string{"vm.internal", "web.app.svc.cluster.local"}},
		{"deleted", nil, true, []string{"vm.internal", "web.app.svc.cluster.local"}},
	}
	for _, s := range steps {
		changed, hosts := ix.setPod("app/web-1", s.pod)
		if changed != s.changed || !reflect.DeepEqual(hosts, s.hosts) {
			t.Errorf("%s: changed %v, hosts %v; want %v, %v", s.name, changed, hosts, s.changed, s.hosts)
		}
	}
	p := ix.build("2", "istio-system", nil)
	if eps := p.Endpoints["vm.internal/app"]; len(eps) != 0 {
		t.Errorf("endpoints of a deleted pod: %v", eps)
	}
}
