package discovery

import (
	"context"
	"fmt"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
)

// A ServiceEntry's workloadSelector makes the matching pods of its
// namespace its endpoints; relabelling a pod away removes it, and the
// change names the ServiceEntry's host for an endpoints-only push.
func TestServiceEntryWorkloadSelector(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "selector")
	host := "billing." + ns + ".internal"
	pod := createPod(t, ns, "billing-1", "billing", map[string]string{"app": "billing"})
	if _, err := ist.NetworkingV1().ServiceEntries(ns).Create(ctx, &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: ns},
		Spec: networking.ServiceEntry{Hosts: []string{host}, Location: networking.ServiceEntry_MESH_INTERNAL,
			Resolution:       networking.ServiceEntry_STATIC,
			Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "billing"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pod as the ServiceEntry's endpoint", func() error {
		s := ctrl.Snapshot()
		svcs := s.ServicesByHost(host)
		if len(svcs) != 1 {
			return fmt.Errorf("%d services", len(svcs))
		}
		eps := s.EndpointsOf(svcs[0])
		if len(eps) != 1 || eps[0].Address != pod.Status.PodIP || eps[0].Port != 8080 || eps[0].ServiceAccount != "billing" || eps[0].PodName != "billing-1" {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})

	pod, err := cs.CoreV1().Pods(ns).Get(ctx, "billing-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Labels["app"] = "retired"
	if _, err := cs.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no endpoints", func() error {
		s := ctrl.Snapshot()
		if eps := s.EndpointsOf(s.ServicesByHost(host)[0]); len(eps) != 0 {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})
	if _, ok := rec.find(func(ch discovery.Change) bool {
		return ch.Kind == discovery.KindPod && ch.Namespace == ns && ch.EndpointsOnly && slices.Contains(ch.Hostnames, host)
	}); !ok {
		t.Errorf("no endpoints-only Pod change naming %s", host)
	}
}
