package discovery

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// scaleIndex fills an index with services Services, each backed by
// podsPer pods in one EndpointSlice, spread over 20 namespaces.
func scaleIndex(services, podsPer int) *index {
	ix := newIndex("cluster.local")
	ix.mesh = DefaultMeshConfig()
	for i := range services {
		ns := fmt.Sprintf("ns-%d", i%20)
		name := fmt.Sprintf("svc-%d", i)
		ix.setService(ns+"/"+name, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250), Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		})
		si := &sliceInfo{Service: ns + "/" + name, Ports: []slicePort{{Name: "http", Port: 8080}}}
		for j := range podsPer {
			pod := fmt.Sprintf("%s-%d", name, j)
			ip := fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, j)
			ix.setPod(ns+"/"+pod, &podInfo{Name: pod, Namespace: ns, IPs: []string{ip}, ServiceAccount: name, Ready: true,
				Labels: map[string]string{"app": name, LabelTLSMode: TLSModeIstio}})
			si.Eps = append(si.Eps, sliceEndpoint{Addresses: []string{ip}, Ready: true, Pod: ns + "/" + pod})
		}
		ix.setSlice(ns+"/"+name+"-x", si)
	}
	return ix
}

// BenchmarkSnapshot measures snapshots at 1000 services and 2000 pods: a
// full build, a rebuild after one pod changed (the common case) and a
// rebuild after one service changed.
func BenchmarkSnapshot(b *testing.B) {
	b.Run("full", func(b *testing.B) {
		ix := scaleIndex(1000, 2)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			for k := range ix.services {
				ix.dirtyEndpoints[k] = true
			}
			ix.build(fmt.Sprint(i), "istio-system", nil)
		}
	})
	b.Run("one-pod-changed", func(b *testing.B) {
		ix := scaleIndex(1000, 2)
		prev := ix.build("0", "istio-system", nil)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			p := *ix.pods["ns-7/svc-7-1"]
			p.Ready = i%2 == 0
			ix.setPod("ns-7/svc-7-1", &p)
			prev = ix.build(fmt.Sprint(i), "istio-system", prev)
		}
	})
	b.Run("one-service-changed", func(b *testing.B) {
		ix := scaleIndex(1000, 2)
		prev := ix.build("0", "istio-system", nil)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-7", Namespace: "ns-7"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.7", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			ix.setService("ns-7/svc-7", svc)
			prev = ix.build(fmt.Sprint(i), "istio-system", prev)
		}
	})
}

// TestScaleSnapshot checks the benchmark's index builds what it should.
func TestScaleSnapshot(t *testing.T) {
	ix := scaleIndex(1000, 2)
	p := ix.build("1", "istio-system", nil)
	if len(p.Services) != 1000 || len(p.Endpoints) != 1000 {
		t.Fatalf("%d services, %d endpoint sets", len(p.Services), len(p.Endpoints))
	}
	for _, s := range p.Services {
		if n := len(p.EndpointsOf(s)); n != 2 {
			t.Fatalf("%s: %d endpoints", s.Hostname, n)
		}
	}
}
