package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/controllers"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/test/argocd"
)

var updateArgoCDFixtures = flag.Bool("update-argocd-fixtures", false,
	"record test/argocd/testdata from the live MeshInstalls of TestArgoCDHealth")

// holdLabel is a node label TestArgoCDHealth's control plane waits for.
const holdLabel = "test.mizzen.dev/argocd-health"

// holdFinalizer keeps an installed object from going away, so that an
// uninstall stays in progress until the test lets go.
const holdFinalizer = "test.mizzen.dev/hold"

// config/argocd/health.lua, run as Argo CD runs it, on a live MeshInstall
// through its life: created, installing, Ready, a spec change with bad
// values, fixed again, a second MeshInstall for its revision, and an
// uninstall. With -update-argocd-fixtures, the objects it sees are recorded
// as the fixtures of test/argocd.
func TestArgoCDHealth(t *testing.T) {
	name, ns, rev := "argocd-health", "mesh-argocd-health", "argocd-health"
	ctx := context.Background()
	script, err := os.ReadFile(filepath.Join(repoRoot(), "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	// Watching from before the create shows every state the operator writes.
	w := watchMeshInstall(t, script, name)

	// Created: no status yet. The API server's answer to the create is the
	// object before the operator saw it. The control plane may only run on
	// nodes with holdLabel, which none has yet: the install stays in
	// progress until the test has looked at it.
	mi := unstructuredMeshInstall(t, fmt.Sprintf(`metadata: {name: %s}
spec:
  profile: minimal
  namespace: %s
  revision: %s
  components: {controlPlane: {nodeSelector: {%q: "true"}}}`, name, ns, rev, holdLabel))
	if err := k.Create(ctx, mi); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uninstall(t, name) })
	if _, found, _ := unstructured.NestedMap(mi.Object, "status"); found {
		t.Errorf("the created MeshInstall already has a status: %v", mi.Object["status"])
	}
	wantHealth(t, script, mi, argocd.Progressing, "")
	record(t, "created", "just created, before the operator wrote any status", mi)

	// Installing: Progressing while Reconciling, waiting for the control
	// plane's pods.
	installing := w.until(t, "the install waits for the control plane", 0, []string{argocd.Progressing},
		func(o *unstructured.Unstructured, _ string) bool {
			return conditionIs(o, controllers.ConditionReconciling, controllers.ReasonProgressingComponents) &&
				strings.Contains(conditionMsg(o, controllers.ConditionReconciling), "controlplane")
		})
	wantHealth(t, script, installing, argocd.Progressing, conditionMsg(installing, controllers.ConditionReconciling))
	record(t, "progressing", "installing: Reconciling=True (ComponentsProgressing), the control plane's pods not scheduled yet", installing)

	// A node for the control plane: Healthy.
	labelNode(t, kube.Nodes[0], holdLabel, "true")
	ready := w.until(t, "the install is Healthy", 0, []string{argocd.Progressing, argocd.Healthy},
		func(_ *unstructured.Unstructured, status string) bool { return status == argocd.Healthy })
	wantHealth(t, script, ready, argocd.Healthy, conditionMsg(ready, controllers.ConditionReady))
	record(t, "ready", "installed: Ready=True for the current generation", ready)

	// A spec change with values the charts refuse: Progressing until the
	// operator handles it, then Degraded with Helm's message.
	changed := updateUnstructured(t, name, func(o *unstructured.Unstructured) {
		if err := unstructured.SetNestedMap(o.Object, map[string]any{"controlplane": map[string]any{"replicas": "three"}}, "spec", "values"); err != nil {
			t.Fatal(err)
		}
	})
	if observed, _, _ := unstructured.NestedInt64(changed.Object, "status", "observedGeneration"); observed >= changed.GetGeneration() {
		t.Errorf("the update's answer has generation %d, observed %d: the operator cannot have handled it yet", changed.GetGeneration(), observed)
	}
	wantHealth(t, script, changed, argocd.Progressing, "")
	record(t, "spec-not-observed", "the API server's answer to a spec change (bad values): generation ahead of status.observedGeneration", changed)
	stalled := w.until(t, "the bad values make it Degraded", changed.GetGeneration(), []string{argocd.Progressing, argocd.Degraded},
		func(_ *unstructured.Unstructured, status string) bool { return status == argocd.Degraded })
	if !conditionIs(stalled, controllers.ConditionStalled, controllers.ReasonRenderFailed) {
		t.Errorf("Degraded, but %s", summary(stalled))
	}
	msg := wantHealth(t, script, stalled, argocd.Degraded, conditionMsg(stalled, controllers.ConditionStalled))
	if !strings.Contains(msg, "controlplane") || !strings.Contains(msg, "replicas") {
		t.Errorf("Degraded message %q does not carry Helm's message naming the chart and the value", msg)
	}
	record(t, "stalled-render-failed", "Stalled=True (RenderFailed) by bad values", stalled)

	// Fixed: Healthy again.
	fixed := updateUnstructured(t, name, func(o *unstructured.Unstructured) {
		unstructured.RemoveNestedField(o.Object, "spec", "values")
	})
	wantHealth(t, script, fixed, argocd.Progressing, "")
	w.until(t, "the fixed MeshInstall is Healthy again", fixed.GetGeneration(), []string{argocd.Progressing, argocd.Healthy},
		func(_ *unstructured.Unstructured, status string) bool { return status == argocd.Healthy })

	// A second MeshInstall for the same revision stalls: Degraded.
	twin := "argocd-health-twin"
	other := unstructuredMeshInstall(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: minimal, namespace: mesh-argocd-twin, revision: %s}", twin, rev))
	if err := k.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uninstall(t, twin) })
	waitCondition(t, twin, controllers.ConditionStalled, metav1.ConditionTrue, controllers.ReasonRevisionConflict)
	conflict := getUnstructured(t, twin)
	msg = wantHealth(t, script, conflict, argocd.Degraded, conditionMsg(conflict, controllers.ConditionStalled))
	if !strings.Contains(msg, `"`+name+`"`) {
		t.Errorf("Degraded message %q does not name the MeshInstall that holds the revision", msg)
	}
	record(t, "stalled-revision-conflict", "Stalled=True (RevisionConflict): a second MeshInstall for a revision", conflict)
	uninstall(t, twin)

	// Uninstalling: Progressing while installed objects remain. A finalizer
	// on one of them keeps the uninstall going until the test has looked.
	cms := &corev1.ConfigMapList{}
	if err := k.List(ctx, cms, client.InNamespace(ns), client.MatchingLabels{render.LabelOwner: name}); err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) == 0 {
		t.Fatalf("MeshInstall %s installed no ConfigMap in %s", name, ns)
	}
	held := cms.Items[0].DeepCopy()
	patch := client.MergeFrom(held.DeepCopy())
	controllerutil.AddFinalizer(held, holdFinalizer)
	if err := k.Patch(ctx, held, patch); err != nil {
		t.Fatal(err)
	}
	release := func() {
		cm := &corev1.ConfigMap{}
		if err := get(t, cm, ns, held.Name); err != nil {
			return
		}
		patch := client.MergeFrom(cm.DeepCopy())
		if controllerutil.RemoveFinalizer(cm, holdFinalizer) {
			if err := k.Patch(ctx, cm, patch); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("releasing ConfigMap %s: %v", held.Name, err)
			}
		}
	}
	t.Cleanup(release) // runs before the uninstall cleanup, should the test stop early
	if err := k.Delete(ctx, mi); err != nil {
		t.Fatal(err)
	}
	uninstalling := w.until(t, "the uninstall waits for the held ConfigMap", 0, []string{argocd.Healthy, argocd.Progressing},
		func(o *unstructured.Unstructured, _ string) bool {
			return o.GetDeletionTimestamp() != nil && conditionIs(o, controllers.ConditionReconciling, controllers.ReasonUninstalling) &&
				strings.Contains(conditionMsg(o, controllers.ConditionReconciling), held.Name)
		})
	wantHealth(t, script, uninstalling, argocd.Progressing, conditionMsg(uninstalling, controllers.ConditionReconciling))
	record(t, "uninstalling", "deleted: Reconciling=True (Uninstalling) while an installed object is still there", uninstalling)
	release()
	uninstall(t, name)
}

// labelNode sets a label on a node, and removes it when the test ends.
func labelNode(t *testing.T, node, key, value string) {
	t.Helper()
	set := func(v any) error {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
		if err != nil {
			return err
		}
		n := &corev1.Node{}
		n.Name = node
		return k.Patch(context.Background(), n, client.RawPatch(types.MergePatchType, patch))
	}
	if err := set(value); err != nil {
		t.Fatalf("labelling node %s: %v", node, err)
	}
	t.Cleanup(func() {
		if err := set(nil); err != nil {
			t.Errorf("removing label %s from node %s: %v", key, node, err)
		}
	})
}

// unstructuredMeshInstall parses a MeshInstall manifest without its types,
// as Argo CD holds it (integers as int64, as read from the API server).
func unstructuredMeshInstall(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	obj, err := argocd.Decode([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MeshInstall"))
	return u
}

func getUnstructured(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MeshInstall"))
	if err := k.Get(context.Background(), client.ObjectKey{Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

// updateUnstructured changes a MeshInstall, retrying on conflicts, and
// returns the API server's answer to the update.
func updateUnstructured(t *testing.T, name string, change func(*unstructured.Unstructured)) *unstructured.Unstructured {
	t.Helper()
	for range 20 {
		u := getUnstructured(t, name)
		change(u)
		err := k.Update(context.Background(), u)
		if err == nil {
			return u
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("updating MeshInstall %s: %v", name, err)
		}
	}
	t.Fatalf("updating MeshInstall %s: conflicts every time", name)
	return nil
}

// condition returns the condition typ of an unstructured MeshInstall, or nil.
func condition(o *unstructured.Unstructured, typ string) map[string]any {
	list, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range list {
		if c, ok := c.(map[string]any); ok && c["type"] == typ {
			return c
		}
	}
	return nil
}

// summary describes a MeshInstall's generations and conditions, for failures.
func summary(o *unstructured.Unstructured) string {
	observed, _, _ := unstructured.NestedInt64(o.Object, "status", "observedGeneration")
	list, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	var conds []string
	for _, c := range list {
		if c, ok := c.(map[string]any); ok {
			conds = append(conds, fmt.Sprintf("%v=%v %v (generation %v): %v", c["type"], c["status"], c["reason"], c["observedGeneration"], c["message"]))
		}
	}
	return fmt.Sprintf("generation %d, observed %d, deleting %v, conditions [%s]",
		o.GetGeneration(), observed, o.GetDeletionTimestamp() != nil, strings.Join(conds, "; "))
}

// conditionMsg returns the message of condition typ, or "".
func conditionMsg(o *unstructured.Unstructured, typ string) string {
	m, _ := condition(o, typ)["message"].(string)
	return m
}

// conditionIs says whether condition typ is True with reason.
func conditionIs(o *unstructured.Unstructured, typ, reason string) bool {
	c := condition(o, typ)
	return c != nil && c["status"] == string(metav1.ConditionTrue) && c["reason"] == reason
}

// wantHealth runs the health check on o and checks its status and, unless
// empty, its message; it returns the message.
func wantHealth(t *testing.T, script []byte, o *unstructured.Unstructured, want, wantMessage string) string {
	t.Helper()
	status, message, err := argocd.Health(script, o.Object)
	if err != nil {
		t.Fatalf("health check of MeshInstall %s: %v", o.GetName(), err)
	}
	if status != want {
		t.Errorf("health of MeshInstall %s = %s (%q), want %s; %s", o.GetName(), status, message, want, summary(o))
	}
	if wantMessage != "" && message != wantMessage {
		t.Errorf("health message of MeshInstall %s = %q, want %q", o.GetName(), message, wantMessage)
	}
	return message
}

// record writes o as a fixture of test/argocd when -update-argocd-fixtures
// is set.
func record(t *testing.T, fixture, what string, o *unstructured.Unstructured) {
	t.Helper()
	if !*updateArgoCDFixtures {
		return
	}
	o = o.DeepCopy()
	o.SetManagedFields(nil)
	data, err := yaml.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	header := "# A live MeshInstall, " + what + ".\n" +
		"# Recorded by TestArgoCDHealth (test/integration/argocd_test.go), managedFields\n" +
		"# removed; the health Argo CD must show for it is in test/argocd/health_test.go.\n" +
		"# Record again with:\n" +
		"#   go test ./test/integration -count=1 -run TestArgoCDHealth -args -update-argocd-fixtures\n"
	path := filepath.Join(repoRoot(), "test", "argocd", "testdata", fixture+".yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append([]byte(header), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %s", path)
}

// miWatch follows one MeshInstall through a watch and runs the health
// check on every version of it the API server reports.
type miWatch struct {
	script []byte
	name   string
	wc     client.WithWatch
	w      watch.Interface
	rv     string
	// last is the last health seen, to log changes only.
	last string
}

func watchMeshInstall(t *testing.T, script []byte, name string) *miWatch {
	t.Helper()
	wc, err := client.NewWithWatch(kube.Config, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w := &miWatch{script: script, name: name, wc: wc}
	w.open(t)
	t.Cleanup(func() { w.w.Stop() })
	return w
}

func (w *miWatch) open(t *testing.T) {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MeshInstallList"))
	opts := []client.ListOption{client.MatchingFields{"metadata.name": w.name}}
	if w.rv != "" {
		opts = append(opts, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: w.rv}})
	}
	var err error
	if w.w, err = w.wc.Watch(context.Background(), list, opts...); err != nil {
		t.Fatalf("watching MeshInstall %s: %v", w.name, err)
	}
}

// until reads versions of the MeshInstall, skipping those older than
// generation minGeneration, until done says stop, and returns that version.
// Every version's health must be one of allowed.
func (w *miWatch) until(t *testing.T, what string, minGeneration int64, allowed []string, done func(*unstructured.Unstructured, string) bool) *unstructured.Unstructured {
	t.Helper()
	deadline := time.After(installTimeout)
	for {
		var ev watch.Event
		var ok bool
		select {
		case ev, ok = <-w.w.ResultChan():
		case <-deadline:
			t.Fatalf("timed out after %s waiting until %s; last health %s", installTimeout, what, w.last)
		}
		if !ok {
			// The API server ends watches now and then: go on from the
			// last version seen.
			w.open(t)
			continue
		}
		if ev.Type == watch.Error {
			t.Logf("watch error %v; watching again", apierrors.FromObject(ev.Object))
			w.rv = ""
			w.w.Stop()
			w.open(t)
			continue
		}
		o, isU := ev.Object.(*unstructured.Unstructured)
		if !isU || ev.Type == watch.Bookmark {
			continue
		}
		w.rv = o.GetResourceVersion()
		if ev.Type == watch.Deleted {
			t.Fatalf("MeshInstall %s was deleted while waiting until %s", w.name, what)
		}
		if o.GetGeneration() < minGeneration {
			continue
		}
		status, message, err := argocd.Health(w.script, o.Object)
		if err != nil {
			t.Fatalf("health check of MeshInstall %s: %v", w.name, err)
		}
		if now := status + ": " + message; now != w.last {
			t.Logf("MeshInstall %s (generation %d): %s", w.name, o.GetGeneration(), now)
			w.last = now
		}
		if !slices.Contains(allowed, status) {
			t.Fatalf("while waiting until %s, the health was %s (%q), want one of %v; %s", what, status, message, allowed, summary(o))
		}
		if done(o, status) {
			return o
		}
	}
}
