package discovery

import (
	"context"
	"fmt"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// A Deployment's pods on kwok nodes become the endpoints of the Service that
// selects them, through the EndpointSlices kube-controller-manager writes,
// with their identity; scaling down removes them.
func TestServiceEndpointsFollowDeployment(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "endpoints")
	host := fmt.Sprintf("reviews.%s.svc.cluster.local", ns)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo-reviews"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns, Annotations: map[string]string{discovery.AnnotationExportTo: "."}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 9080, TargetPort: intstr.FromInt32(8080)},
			{Name: "grpc", Port: 9090, AppProtocol: ptr.To("grpc"), TargetPort: intstr.FromString("grpc")},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "reviews", "version": "v1", discovery.LabelTLSMode: discovery.TLSModeIstio}
	dep, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "reviews", "version": "v1"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{ServiceAccountName: "bookinfo-reviews", Containers: []corev1.Container{{
					Name: "app", Image: "registry.k8s.io/pause:3.10",
					Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 7070}},
				}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	endpoints := func() (*model.Service, []*model.Endpoint, error) {
		snap := ctrl.Snapshot()
		svcs := snap.ServicesByHost(host)
		if len(svcs) != 1 {
			return nil, nil, fmt.Errorf("%d services named %s", len(svcs), host)
		}
		return svcs[0], snap.EndpointsOf(svcs[0]), nil
	}
	readyCount := func(want int) func() error {
		return func() error {
			_, eps, err := endpoints()
			if err != nil {
				return err
			}
			n := 0
			for _, e := range eps {
				if e.Ready {
					n++
				}
			}
			// Two ports per pod.
			if n != 2*want || len(eps) != 2*want {
				return fmt.Errorf("%d endpoints, %d ready; want %d ready", len(eps), n, 2*want)
			}
			return nil
		}
	}
	eventually(t, "three ready pods as endpoints", readyCount(3))

	svc, eps, _ := endpoints()
	if !slices.Equal(svc.ExportTo, []string{"."}) || len(svc.Addresses) != 1 || svc.Resolution != model.ClientSideLB {
		t.Errorf("service %+v", svc)
	}
	if p, _ := svc.PortByNumber(9090); p.Protocol != model.ProtocolGRPC {
		t.Errorf("port 9090 protocol %s", p.Protocol)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=reviews"})
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{}
	for _, p := range pods.Items {
		ips[p.Status.PodIP] = p.Name
	}
	for _, e := range eps {
		if ips[e.Address] != e.PodName || e.PodName == "" {
			t.Errorf("endpoint %s is pod %q; the pods are %v", e.Address, e.PodName, ips)
		}
		wantPort := map[uint32]uint32{9080: 8080, 9090: 7070}[e.ServicePort]
		if e.Port != wantPort || e.ServiceAccount != "bookinfo-reviews" || e.WorkloadName != "reviews-v1" ||
			e.TLSMode != "istio" || e.Labels["version"] != "v1" || e.Namespace != ns {
			t.Errorf("endpoint %+v", *e)
		}
	}
	if _, ok := rec.find(func(ch discovery.Change) bool {
		return ch.Kind == discovery.KindEndpointSlice && ch.Namespace == ns && ch.EndpointsOnly && slices.Equal(ch.Hostnames, []string{host})
	}); !ok {
		t.Error("no endpoints-only EndpointSlice change for " + host)
	}

	scale := func(n int32) {
		t.Helper()
		s, err := cs.AppsV1().Deployments(ns).GetScale(ctx, dep.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Replicas = n
		if _, err := cs.AppsV1().Deployments(ns).UpdateScale(ctx, dep.Name, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scale(1)
	eventually(t, "one pod left", readyCount(1))
	scale(0)
	eventually(t, "no endpoints", readyCount(0))

	if err := cs.CoreV1().Services(ns).Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the service gone", func() error {
		if svcs := ctrl.Snapshot().ServicesByHost(host); len(svcs) != 0 {
			return fmt.Errorf("still %d", len(svcs))
		}
		return nil
	})
}
