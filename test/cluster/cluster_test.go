package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mizzen-mesh/mizzen/test/cluster"
)

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local Kubernetes control plane")
	}
	crdDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(crdDir, "widgets.yaml"), []byte(widgetCRD), 0o600); err != nil {
		t.Fatal(err)
	}
	webhooks := &envtest.WebhookInstallOptions{}
	start := time.Now()
	c, err := cluster.Start(t.Context(), cluster.Options{
		CRDDirectoryPaths:     []string{crdDir},
		WebhookInstallOptions: webhooks,
	})
	var missing *cluster.MissingBinariesError
	if errors.As(err, &missing) {
		t.Fatalf("%v\n\nRun hack/setup-kube.sh once, then run the tests again.", err)
	}
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
		if err := c.Stop(); err != nil { // idempotent
			t.Errorf("stopping the cluster again: %v", err)
		}
	})
	t.Logf("cluster started in %v (binaries: %s, kubeconfig: %s)", time.Since(start).Round(time.Millisecond), c.BinDir, c.Kubeconfig)

	cs := kubernetes.NewForConfigOrDie(c.Config)
	cl, err := c.Client(nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("CRDs and webhook options passed through", func(t *testing.T) {
		if len(c.Env.CRDs) != 1 || c.Env.CRDs[0].Name != "widgets.example.mizzen.dev" {
			t.Fatalf("installed CRDs: %v", c.Env.CRDs)
		}
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("example.mizzen.dev/v1")
		u.SetKind("Widget")
		u.SetNamespace("default")
		u.SetName("w")
		// The API server holds creates for 2s after a CRD becomes
		// Established (upstream behaviour), so this one is slow.
		if err := cl.Create(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		if webhooks.LocalServingPort == 0 || webhooks.LocalServingCertDir == "" {
			t.Fatalf("webhook options not filled in: port %d, cert dir %q", webhooks.LocalServingPort, webhooks.LocalServingCertDir)
		}
	})

	t.Run("server version", func(t *testing.T) {
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != cluster.KubeVersion {
			t.Fatalf("server version %q, want %q", v.GitVersion, cluster.KubeVersion)
		}
	})

	t.Run("nodes", func(t *testing.T) {
		nodes := &corev1.NodeList{}
		if err := cl.List(t.Context(), nodes, client.MatchingLabels{"type": "kwok"}); err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 2 {
			t.Fatalf("got %d kwok nodes, want 2", len(nodes.Items))
		}
		for _, n := range nodes.Items {
			if len(n.Spec.Taints) != 0 {
				t.Errorf("node %s has taints %v", n.Name, n.Spec.Taints)
			}
			if got := n.Status.Allocatable.Cpu().String(); got != "32" {
				t.Errorf("node %s allocatable cpu %s, want 32", n.Name, got)
			}
			if got := n.Status.Allocatable.Memory().String(); got != "256Gi" {
				t.Errorf("node %s allocatable memory %s, want 256Gi", n.Name, got)
			}
		}
	})

	t.Run("deployment, service, garbage collection", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, cs, "deploy")
		labels := map[string]string{"app": "web"}
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](3),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "web", Image: cluster.SmokeImage,
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					}}},
				},
			},
		}
		if err := cl.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: corev1.ServiceSpec{
				Selector: labels,
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		if err := cl.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		if svc.Spec.ClusterIP == "" {
			t.Errorf("service got no cluster IP")
		}

		var pods []corev1.Pod
		eventually(t, "3 pods Running and Ready on kwok nodes", func() error {
			list := &corev1.PodList{}
			if err := cl.List(ctx, list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
				return err
			}
			ready := 0
			for _, p := range list.Items {
				if p.Status.Phase == corev1.PodRunning && podReady(&p) && p.DeletionTimestamp == nil {
					ready++
				}
			}
			if ready != 3 {
				return fmt.Errorf("%d of %d pods Running and Ready", ready, len(list.Items))
			}
			pods = list.Items
			return nil
		})
		for _, p := range pods {
			node := &corev1.Node{}
			if err := cl.Get(ctx, client.ObjectKey{Name: p.Spec.NodeName}, node); err != nil {
				t.Fatalf("pod %s: node %q: %v", p.Name, p.Spec.NodeName, err)
			}
			if node.Labels["type"] != "kwok" {
				t.Errorf("pod %s runs on %s, not a kwok node", p.Name, node.Name)
			}
			if p.Status.PodIP == "" {
				t.Errorf("pod %s has no IP", p.Name)
			}
		}

		eventually(t, "the service's endpoints to list 3 ready addresses", func() error {
			slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
			if err != nil {
				return err
			}
			n := 0
			for _, s := range slices.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						n++
					}
				}
			}
			if n != 3 {
				return fmt.Errorf("%d ready endpoints", n)
			}
			return nil
		})

		// Garbage collection: the ReplicaSet and Pods are owned by the
		// Deployment and go away with it.
		rsList := &appsv1.ReplicaSetList{}
		if err := cl.List(ctx, rsList, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(rsList.Items) != 1 {
			t.Fatalf("got %d replicasets, want 1", len(rsList.Items))
		}
		if err := cl.Delete(ctx, dep, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the ReplicaSet and Pods to be garbage collected", func() error {
			rs := &appsv1.ReplicaSet{}
			err := cl.Get(ctx, client.ObjectKeyFromObject(&rsList.Items[0]), rs)
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("replicaset still there (%v)", err)
			}
			list := &corev1.PodList{}
			if err := cl.List(ctx, list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
				return err
			}
			if len(list.Items) != 0 {
				return fmt.Errorf("%d pods left", len(list.Items))
			}
			return nil
		})
	})

	t.Run("namespace deletion", func(t *testing.T) {
		ctx := t.Context()
		ns := createNamespace(t, cs, "delete")
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
			Data:       map[string]string{"k": "v"},
		}
		if err := cl.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: cluster.SmokeImage}}},
		}
		if err := cl.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the pod to run", func() error {
			if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			if pod.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("phase %s", pod.Status.Phase)
			}
			return nil
		})
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "namespace "+ns+" to be gone", func() error {
			got, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("namespace still %s", got.Status.Phase)
		})
	})

}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.mizzen.dev
spec:
  group: example.mizzen.dev
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`

func createNamespace(t *testing.T, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// kube-controller-manager creates the default ServiceAccount.
	eventually(t, "the default ServiceAccount in "+ns.Name, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(t.Context(), "default", metav1.GetOptions{})
		return err
	})
	return ns.Name
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// eventually retries f every 100ms for up to 30s.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var err error
	for {
		if err = f(); err == nil {
			t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
