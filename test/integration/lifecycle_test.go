package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/controllers"
)

// Switching demo to minimal removes the gateways and add-ons and nothing
// else: the control plane keeps running untouched, and users' objects in
// the mesh namespace stay.
func TestProfileSwitchPrunesExactly(t *testing.T) {
	name, ns := "switch", "mesh-switch"
	install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: demo, namespace: %s}", name, ns))
	waitReady(t, name)

	userCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "user-settings", Namespace: ns}, Data: map[string]string{"a": "b"}}
	if err := k.Create(context.Background(), userCM); err != nil {
		t.Fatal(err)
	}
	istiod := &appsv1.Deployment{}
	if err := get(t, istiod, ns, "istiod"); err != nil {
		t.Fatal(err)
	}

	update(t, name, func(mi *v1alpha1.MeshInstall) { mi.Spec.Profile = "minimal" })
	mi := waitReady(t, name)

	if got := strings.Join(deployments(t, ns, name), ","); got != "istio-sidecar-injector,istiod" {
		t.Errorf("deployments after the switch = %q, want the control plane and injector only", got)
	}
	for _, svc := range []string{"istio-ingressgateway", "istio-egressgateway", "prometheus", "grafana", "tracing", "kiali"} {
		if err := get(t, &corev1.Service{}, ns, svc); err == nil {
			t.Errorf("service %s survived the switch to minimal", svc)
		}
	}
	after := &appsv1.Deployment{}
	if err := get(t, after, ns, "istiod"); err != nil {
		t.Fatal(err)
	}
	// minimal sizes the control plane differently from demo, so istiod is
	// updated in place, never recreated.
	if after.UID != istiod.UID {
		t.Errorf("istiod was recreated by the switch (uid %s -> %s)", istiod.UID, after.UID)
	}
	if err := get(t, &corev1.ConfigMap{}, ns, "user-settings"); err != nil {
		t.Errorf("the user's ConfigMap was touched: %v", err)
	}
	states := componentStates(mi)
	for _, c := range []string{"prometheus", "grafana", "jaeger", "kiali"} {
		if states[c] != v1alpha1.ComponentDisabled {
			t.Errorf("%s is %s after the switch, want Disabled", c, states[c])
		}
	}
	for _, e := range mi.Status.Inventory.Entries {
		if strings.Contains(e.ID, "gateway") && strings.Contains(e.ID, "Deployment") {
			t.Errorf("the inventory still lists %s", e.ID)
		}
	}
}

// A deleted or edited managed object comes back within seconds.
func TestDriftIsRepaired(t *testing.T) {
	name, ns := "drift", "mesh-drift"
	install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: default, namespace: %s}", name, ns))
	waitReady(t, name)
	ctx := context.Background()

	// A deleted Deployment is recreated.
	istiod := &appsv1.Deployment{}
	if err := get(t, istiod, ns, "istiod"); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(ctx, istiod); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 10*time.Second, "istiod is recreated", func() error {
		d := &appsv1.Deployment{}
		if err := get(t, d, ns, "istiod"); err != nil {
			return err
		}
		if d.UID == istiod.UID {
			return fmt.Errorf("not deleted yet")
		}
		return nil
	})
	t.Logf("deleted Deployment restored in %s", time.Since(start).Round(time.Millisecond))

	// A deleted Service is recreated.
	svc := &corev1.Service{}
	if err := get(t, svc, ns, "istio-ingressgateway"); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the ingress Service is recreated", func() error {
		s := &corev1.Service{}
		if err := get(t, s, ns, "istio-ingressgateway"); err != nil {
			return err
		}
		if s.UID == svc.UID {
			return fmt.Errorf("not deleted yet")
		}
		return nil
	})

	// An edited ConfigMap (the mesh config) is restored.
	cm := &corev1.ConfigMap{}
	if err := get(t, cm, ns, "istio"); err != nil {
		t.Fatal(err)
	}
	want := cm.Data["mesh"]
	cm.Data["mesh"] = "accessLogFile: /tmp/edited\n"
	if err := k.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the mesh ConfigMap is restored", func() error {
		c := &corev1.ConfigMap{}
		if err := get(t, c, ns, "istio"); err != nil {
			return err
		}
		if c.Data["mesh"] != want {
			return fmt.Errorf("mesh = %q", c.Data["mesh"])
		}
		return nil
	})

	// An edited Deployment spec (replicas scaled by hand, image changed) is restored.
	dep := &appsv1.Deployment{}
	if err := get(t, dep, ns, "istio-sidecar-injector"); err != nil {
		t.Fatal(err)
	}
	wantImage := dep.Spec.Template.Spec.Containers[0].Image
	dep.Spec.Template.Spec.Containers[0].Image = "example.invalid/other:1"
	if err := k.Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the injector's image is restored", func() error {
		d := &appsv1.Deployment{}
		if err := get(t, d, ns, "istio-sidecar-injector"); err != nil {
			return err
		}
		if got := d.Spec.Template.Spec.Containers[0].Image; got != wantImage {
			return fmt.Errorf("image = %s", got)
		}
		return nil
	})

	// A deleted CRD (a shared object) comes back too.
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := get(t, crd, "", "sidecars.networking.istio.io"); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(ctx, crd); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the Sidecar CRD is recreated", func() error {
		c := &apiextensionsv1.CustomResourceDefinition{}
		if err := get(t, c, "", "sidecars.networking.istio.io"); err != nil {
			return err
		}
		if c.UID == crd.UID {
			return fmt.Errorf("not deleted yet")
		}
		return nil
	})
	waitReady(t, name)
}

// Spec changes reach the live objects: replicas, the gateway's service
// type, mesh config.
func TestSpecChangesReachObjects(t *testing.T) {
	name, ns := "changes", "mesh-changes"
	install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: demo, namespace: %s}", name, ns))
	waitReady(t, name)

	update(t, name, func(mi *v1alpha1.MeshInstall) {
		mi.Spec.Components = &v1alpha1.Components{
			ControlPlane: &v1alpha1.ControlPlaneComponent{WorkloadComponent: v1alpha1.WorkloadComponent{
				WorkloadSettings: v1alpha1.WorkloadSettings{Replicas: ptr.To[int32](2)},
			}},
			IngressGateways: []v1alpha1.GatewayComponent{{
				Name:    "istio-ingressgateway",
				Service: &v1alpha1.GatewayService{Type: corev1.ServiceTypeNodePort},
			}},
		}
		mi.Spec.MeshConfig = &v1alpha1.MeshConfig{
			OutboundTrafficPolicy: &v1alpha1.OutboundTrafficPolicy{Mode: "REGISTRY_ONLY"},
			DefaultConfig:         &v1alpha1.ProxyConfig{HoldApplicationUntilProxyStarts: ptr.To(true)},
		}
	})
	mi := waitReady(t, name)

	// The second replica's pod may still be turning Ready on a loaded
	// machine (kwok marks it); the spec must say 2 at once.
	dep := &appsv1.Deployment{}
	eventually(t, 30*time.Second, "istiod with 2 ready replicas", func() error {
		if err := get(t, dep, ns, "istiod"); err != nil {
			return err
		}
		if *dep.Spec.Replicas != 2 || dep.Status.ReadyReplicas != 2 {
			return fmt.Errorf("istiod replicas = %d (ready %d), want 2", *dep.Spec.Replicas, dep.Status.ReadyReplicas)
		}
		return nil
	})
	svc := &corev1.Service{}
	if err := get(t, svc, ns, "istio-ingressgateway"); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("ingress service type = %s, want NodePort", svc.Spec.Type)
	}
	cm := &corev1.ConfigMap{}
	if err := get(t, cm, ns, "istio"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cm.Data["mesh"], "REGISTRY_ONLY") || !strings.Contains(cm.Data["mesh"], "holdApplicationUntilProxyStarts: true") {
		t.Errorf("mesh config lacks the change:\n%s", cm.Data["mesh"])
	}
	// The profile's other settings stay: demo's access log and egress gateway.
	if !strings.Contains(cm.Data["mesh"], "accessLogFile: /dev/stdout") {
		t.Errorf("mesh config lost the profile's access log:\n%s", cm.Data["mesh"])
	}
	if componentStates(mi)["egress.istio-egressgateway"] != v1alpha1.ComponentHealthy {
		t.Errorf("the egress gateway is not healthy after the change: %+v", mi.Status.Components)
	}
}

// A render error (bad values) stalls the MeshInstall with Helm's message
// and deletes nothing already applied; fixing the spec recovers.
func TestBadValuesStallWithoutDeleting(t *testing.T) {
	name, ns := "badvalues", "mesh-badvalues"
	install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: minimal, namespace: %s}", name, ns))
	waitReady(t, name)

	update(t, name, func(mi *v1alpha1.MeshInstall) {
		mi.Spec.Profile = "demo"
		mi.Spec.Values = rawJSON(`{"controlplane": {"replicas": "three"}}`)
	})
	mi := waitCondition(t, name, controllers.ConditionStalled, metav1.ConditionTrue, controllers.ReasonRenderFailed)
	msg := conditionMessage(mi, controllers.ConditionReady)
	if !strings.Contains(msg, "controlplane") || !strings.Contains(msg, "replicas") {
		t.Errorf("Ready message %q does not name the chart and the value", msg)
	}
	if got := strings.Join(deployments(t, ns, name), ","); got != "istio-sidecar-injector,istiod" {
		t.Errorf("deployments after the bad render = %q, want the ones installed before", got)
	}
	eventually(t, 10*time.Second, "a Warning event RenderFailed is recorded on the MeshInstall", func() error {
		list := &eventsv1.EventList{}
		if err := k.List(context.Background(), list); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Kind == "MeshInstall" && e.Regarding.Name == name && e.Type == corev1.EventTypeWarning &&
				e.Reason == controllers.ReasonRenderFailed && strings.Contains(e.Note, "replicas") {
				return nil
			}
		}
		return fmt.Errorf("no such event among %d", len(list.Items))
	})

	update(t, name, func(mi *v1alpha1.MeshInstall) { mi.Spec.Values = nil })
	waitReady(t, name)
	if got := len(deployments(t, ns, name)); got != 8 {
		t.Errorf("after fixing the values, %d deployments, want demo's 8", got)
	}
}

// A second MeshInstall for the same revision stalls, naming the first; it
// proceeds once the first is gone.
func TestSecondMeshInstallForARevisionStalls(t *testing.T) {
	install(t, "metadata: {name: first}\nspec: {profile: minimal, namespace: mesh-first, revision: blue}")
	waitReady(t, "first")
	install(t, "metadata: {name: second}\nspec: {profile: minimal, namespace: mesh-second, revision: blue}")
	mi := waitCondition(t, "second", controllers.ConditionStalled, metav1.ConditionTrue, controllers.ReasonRevisionConflict)
	if msg := conditionMessage(mi, controllers.ConditionReady); !strings.Contains(msg, `"first"`) || !strings.Contains(msg, `"blue"`) {
		t.Errorf("message %q does not name the other MeshInstall and the revision", msg)
	}
	if got := deployments(t, "mesh-second", "second"); len(got) > 0 {
		t.Errorf("the stalled MeshInstall installed %v", got)
	}
	uninstall(t, "first")
	waitReady(t, "second")
	if got := strings.Join(deployments(t, "mesh-second", "second"), ","); got != "istio-sidecar-injector-blue,istiod-blue" {
		t.Errorf("deployments = %q, want the blue revision's", got)
	}
}

// Once a MeshInstall is Ready and nothing changes, reconciling it again
// writes nothing to the API server: not even a dry run or a status patch.
func TestNoOpReconcileWritesNothing(t *testing.T) {
	name, ns := "noop", "mesh-noop"
	install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: demo, namespace: %s}", name, ns))
	waitReady(t, name)
	// Let the echo of the install's own writes settle.
	settle(t)

	mark := writes.Total()
	// An annotation change triggers a reconcile without changing the spec.
	eventually(t, 10*time.Second, "annotating", func() error {
		mi := &v1alpha1.MeshInstall{}
		if err := k.Get(context.Background(), client.ObjectKey{Name: name}, mi); err != nil {
			return err
		}
		if mi.Annotations == nil {
			mi.Annotations = map[string]string{}
		}
		mi.Annotations["test.mizzen.dev/poke"] = time.Now().String()
		return k.Update(context.Background(), mi)
	})
	time.Sleep(3 * time.Second)
	if n, which := writes.Since(mark); n != 0 {
		t.Errorf("a no-op reconcile issued %d writes:\n%s", n, which)
	}
}

// settle waits until the operator has issued no write for two seconds.
func settle(t *testing.T) {
	t.Helper()
	eventually(t, 60*time.Second, "the operator stops writing", func() error {
		mark := writes.Total()
		time.Sleep(2 * time.Second)
		if n, which := writes.Since(mark); n > 0 {
			return fmt.Errorf("%d writes in 2s:\n%s", n, which)
		}
		return nil
	})
}

func conditionMessage(mi *v1alpha1.MeshInstall, typ string) string {
	for _, c := range mi.Status.Conditions {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// spec.version selects the mesh version; one this operator cannot install
// stalls with a message saying which it can, and its own version (with or
// without a "v") installs.
func TestVersion(t *testing.T) {
	install(t, "metadata: {name: version}\nspec: {profile: minimal, namespace: mesh-version, revision: ver, version: 9.9.9}")
	mi := waitCondition(t, "version", controllers.ConditionStalled, metav1.ConditionTrue, controllers.ReasonUnsupportedVersion)
	if msg := conditionMessage(mi, controllers.ConditionReady); !strings.Contains(msg, `"9.9.9"`) || !strings.Contains(msg, "0.1.0") {
		t.Errorf("message %q names neither the requested nor the installable version", msg)
	}
	if got := deployments(t, "mesh-version", "version"); len(got) > 0 {
		t.Errorf("an unsupported version installed %v", got)
	}
	update(t, "version", func(mi *v1alpha1.MeshInstall) { mi.Spec.Version = "v0.1.0" })
	mi = waitReady(t, "version")
	dep := &appsv1.Deployment{}
	if err := get(t, dep, "mesh-version", "istiod-ver"); err != nil {
		t.Fatal(err)
	}
	if img := dep.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":0.1.0") || mi.Status.AppliedVersion != "0.1.0" {
		t.Errorf("image %s, applied version %s", img, mi.Status.AppliedVersion)
	}
}

// A canary upgrade: a second control plane for another revision runs beside
// the first in the same namespace; removing either leaves the other, and the
// shared CRDs and namespace, untouched.
func TestCanaryRevisionSideBySide(t *testing.T) {
	ns := "mesh-canary"
	install(t, "metadata: {name: stable}\nspec: {profile: default, namespace: "+ns+", revision: stable}")
	install(t, "metadata: {name: canary}\nspec: {profile: minimal, namespace: "+ns+", revision: canary}")
	waitReady(t, "stable")
	waitReady(t, "canary")
	if got := strings.Join(deployments(t, ns, "canary"), ","); got != "istio-sidecar-injector-canary,istiod-canary" {
		t.Errorf("canary deployments = %q", got)
	}
	stable := &appsv1.Deployment{}
	if err := get(t, stable, ns, "istiod-stable"); err != nil {
		t.Fatal(err)
	}
	uninstall(t, "canary")
	after := &appsv1.Deployment{}
	if err := get(t, after, ns, "istiod-stable"); err != nil || after.UID != stable.UID {
		t.Errorf("removing the canary touched the stable control plane: %v", err)
	}
	if err := get(t, &corev1.Namespace{}, "", ns); err != nil {
		t.Errorf("removing the canary removed the shared namespace: %v", err)
	}
	waitReady(t, "stable")
}

// Two revisions that both enable the same gateway in one namespace do not
// fight over it: the second stalls, naming the object and its owner.
func TestTwoRevisionsClaimingOneGatewayStall(t *testing.T) {
	ns := "mesh-claim"
	install(t, "metadata: {name: claim-a}\nspec: {profile: default, namespace: "+ns+", revision: a}")
	waitReady(t, "claim-a")
	install(t, "metadata: {name: claim-b}\nspec: {profile: default, namespace: "+ns+", revision: b}")
	mi := waitCondition(t, "claim-b", controllers.ConditionStalled, metav1.ConditionTrue, controllers.ReasonObjectConflict)
	if msg := conditionMessage(mi, controllers.ConditionReady); !strings.Contains(msg, "istio-ingressgateway") || !strings.Contains(msg, `"claim-a"`) {
		t.Errorf("message %q does not name the gateway and its owner", msg)
	}
	dep := &appsv1.Deployment{}
	if err := get(t, dep, ns, "istio-ingressgateway"); err != nil || dep.Labels["install.mizzen.dev/name"] != "claim-a" {
		t.Errorf("the gateway changed hands: %v %v", err, dep.Labels)
	}
}
