package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/controllers"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

const (
	installTimeout = 90 * time.Second
	poll           = 100 * time.Millisecond
)

// meshInstall parses a MeshInstall manifest.
func meshInstall(t *testing.T, manifest string) *v1alpha1.MeshInstall {
	t.Helper()
	mi := &v1alpha1.MeshInstall{}
	if err := yaml.UnmarshalStrict([]byte(manifest), mi); err != nil {
		t.Fatal(err)
	}
	mi.APIVersion, mi.Kind = v1alpha1.GroupVersion.String(), "MeshInstall"
	return mi
}

// install creates a MeshInstall and deletes it (waiting until it is gone)
// when the test ends.
func install(t *testing.T, manifest string) *v1alpha1.MeshInstall {
	t.Helper()
	mi := meshInstall(t, manifest)
	if err := k.Create(context.Background(), mi); err != nil {
		t.Fatalf("creating MeshInstall %s: %v", mi.Name, err)
	}
	t.Cleanup(func() { uninstall(t, mi.Name) })
	return mi
}

// uninstall deletes a MeshInstall and waits until it is gone.
func uninstall(t *testing.T, name string) {
	t.Helper()
	mi := &v1alpha1.MeshInstall{}
	mi.Name = name
	if err := k.Delete(context.Background(), mi); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting MeshInstall %s: %v", name, err)
		return
	}
	eventually(t, installTimeout, fmt.Sprintf("MeshInstall %s is deleted", name), func() error {
		err := k.Get(context.Background(), client.ObjectKey{Name: name}, &v1alpha1.MeshInstall{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("still there")
	})
}

// waitReady waits until the MeshInstall's current generation is Ready, and
// returns it.
func waitReady(t *testing.T, name string) *v1alpha1.MeshInstall {
	t.Helper()
	mi := &v1alpha1.MeshInstall{}
	deadline := time.Now().Add(installTimeout)
	for {
		if err := k.Get(context.Background(), client.ObjectKey{Name: name}, mi); err != nil {
			t.Fatal(err)
		}
		ready := apimeta.FindStatusCondition(mi.Status.Conditions, controllers.ConditionReady)
		if ready != nil && ready.Status == metav1.ConditionTrue && mi.Status.ObservedGeneration == mi.Generation {
			return mi
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until MeshInstall %s is Ready: generation %d, observed %d, conditions %s\n%s",
				installTimeout, name, mi.Generation, mi.Status.ObservedGeneration, conditions(mi), diagnose(mi.Spec.Namespace))
		}
		time.Sleep(poll)
	}
}

// waitCondition waits until the MeshInstall has condition typ with status and reason.
func waitCondition(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string) *v1alpha1.MeshInstall {
	t.Helper()
	mi := &v1alpha1.MeshInstall{}
	eventually(t, installTimeout, fmt.Sprintf("MeshInstall %s has %s=%s (%s)", name, typ, status, reason), func() error {
		if err := k.Get(context.Background(), client.ObjectKey{Name: name}, mi); err != nil {
			return err
		}
		c := apimeta.FindStatusCondition(mi.Status.Conditions, typ)
		if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != mi.Generation {
			return fmt.Errorf("conditions %s", conditions(mi))
		}
		return nil
	})
	return mi
}

func conditions(mi *v1alpha1.MeshInstall) string {
	var parts []string
	for _, c := range mi.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// eventually retries f until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s: %v", timeout, what, err)
		}
		time.Sleep(poll)
	}
}

// update changes the MeshInstall's spec with a retry on conflicts.
func update(t *testing.T, name string, change func(*v1alpha1.MeshInstall)) {
	t.Helper()
	eventually(t, 10*time.Second, "updating MeshInstall "+name, func() error {
		mi := &v1alpha1.MeshInstall{}
		if err := k.Get(context.Background(), client.ObjectKey{Name: name}, mi); err != nil {
			return err
		}
		change(mi)
		return k.Update(context.Background(), mi)
	})
}

// deployments returns the names of the Deployments a MeshInstall owns in ns.
func deployments(t *testing.T, ns, owner string) []string {
	t.Helper()
	list := &appsv1.DeploymentList{}
	if err := k.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{render.LabelOwner: owner}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range list.Items {
		if d.DeletionTimestamp == nil {
			names = append(names, d.Name)
		}
	}
	sort.Strings(names)
	return names
}

// componentStates returns "name=State" for every component in the status.
func componentStates(mi *v1alpha1.MeshInstall) map[string]v1alpha1.ComponentState {
	out := map[string]v1alpha1.ComponentState{}
	for _, c := range mi.Status.Components {
		out[c.Name] = c.State
	}
	return out
}

// kstatusOf computes the MeshInstall's status the way kstatus-based tools
// (kubectl wait, Flux, cli-utils) do.
func kstatusOf(t *testing.T, mi *v1alpha1.MeshInstall) *kstatus.Result {
	t.Helper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(mi)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MeshInstall"))
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func get(t *testing.T, obj client.Object, ns, name string) error {
	t.Helper()
	return k.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
}

// diagnose describes the nodes and the pods of a namespace, for failures.
func diagnose(ns string) string {
	var b strings.Builder
	nodes := &corev1.NodeList{}
	if err := k.List(context.Background(), nodes); err == nil {
		for _, n := range nodes.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					fmt.Fprintf(&b, "node %s: Ready=%s since %s (%s); taints %v\n", n.Name, c.Status, c.LastTransitionTime, c.Message, n.Spec.Taints)
				}
			}
		}
	}
	pods := &corev1.PodList{}
	if err := k.List(context.Background(), pods, client.InNamespace(ns)); err == nil {
		for _, p := range pods.Items {
			var conds []string
			for _, c := range p.Status.Conditions {
				conds = append(conds, fmt.Sprintf("%s=%s", c.Type, c.Status))
			}
			fmt.Fprintf(&b, "pod %s: node %q phase %s %v deleting=%v\n", p.Name, p.Spec.NodeName, p.Status.Phase, conds, p.DeletionTimestamp != nil)
		}
	}
	return b.String()
}
