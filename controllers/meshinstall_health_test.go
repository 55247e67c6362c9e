package controllers

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/apply"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// A cache that still holds the Deployment as it was before the last apply
// (generation 1, fully rolled out) must not make the component Healthy when
// the apply left generation 2 (say, 2 replicas instead of 1).
func TestHealthWaitsForAppliedGeneration(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	live := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: "istio-system", UID: "u1", Generation: 1,
			Labels: map[string]string{render.LabelComponent: "controlplane"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: "True"}, {Type: appsv1.DeploymentProgressing, Status: "True", Reason: "NewReplicaSetAvailable"}}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(live).Build()
	rendered := &unstructured.Unstructured{}
	rendered.SetAPIVersion("apps/v1")
	rendered.SetKind("Deployment")
	rendered.SetName("istiod")
	rendered.SetNamespace("istio-system")
	rendered.SetLabels(map[string]string{render.LabelComponent: "controlplane"})
	components := []render.Component{{Name: "controlplane", Enabled: true}}

	health := func(applied appliedFunc) v1alpha1.ComponentStatus {
		t.Helper()
		out, err := componentHealth(context.Background(), c, scheme, components, []*unstructured.Unstructured{rendered}, applied)
		if err != nil {
			t.Fatal(err)
		}
		return out[0]
	}
	known := func(ob apply.Observed) appliedFunc {
		return func(*unstructured.Unstructured) (apply.Observed, bool) { return ob, true }
	}

	if got := health(nil); got.State != v1alpha1.ComponentHealthy {
		t.Fatalf("nothing applied known: %+v, want Healthy", got)
	}
	if got := health(known(apply.Observed{UID: "u1", Generation: 1})); got.State != v1alpha1.ComponentHealthy {
		t.Fatalf("cache at the applied generation: %+v, want Healthy", got)
	}
	got := health(known(apply.Observed{UID: "u1", Generation: 2}))
	if got.State != v1alpha1.ComponentProgressing || !strings.Contains(got.Message, "generation 2") {
		t.Fatalf("cache behind the applied generation: %+v, want Progressing naming generation 2", got)
	}
	// Recreated (drift repair): the cache still shows the deleted object.
	if got := health(known(apply.Observed{UID: "u2", Generation: 1})); got.State != v1alpha1.ComponentProgressing {
		t.Fatalf("cache holding a deleted object: %+v, want Progressing", got)
	}
}
