package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// argoCDManager is the field manager of Argo CD's server-side apply.
const argoCDManager = "argocd-controller"

// gitOpsManifest is a MeshInstall as it would be in Git, with what Argo CD
// adds when it syncs (its tracking label and annotation) and the sync
// options config/argocd/application.yaml recommends.
const gitOpsManifest = `apiVersion: install.mizzen.dev/v1alpha1
kind: MeshInstall
metadata:
  name: gitops-sync
  labels:
    app.kubernetes.io/instance: mesh
  annotations:
    argocd.argoproj.io/sync-options: Prune=false,Delete=false
    argocd.argoproj.io/tracking-id: mesh:install.mizzen.dev/MeshInstall:/gitops-sync
spec:
  profile: minimal
  version: 0.1.0
  namespace: mesh-gitops
  revision: gitops
  meshConfig:
    accessLogFile: /dev/stdout
  components:
    controlPlane:
      replicas: 1
      env:
        PILOT_TRACE_SAMPLING: "5"
`

// The operator never writes a MeshInstall's spec, labels or annotations, so
// what a GitOps tool applied stays as applied: applying the same manifest
// again (server-side, as Argo CD's argocd-controller does) changes nothing,
// and no one but the applier owns a field of the spec.
func TestGitOpsApplyStaysInSync(t *testing.T) {
	ctx := context.Background()
	manifest := unstructuredMeshInstall(t, gitOpsManifest)
	name := manifest.GetName()
	apply := func(opts ...client.PatchOption) *unstructured.Unstructured {
		t.Helper()
		u := manifest.DeepCopy()
		opts = append([]client.PatchOption{client.FieldOwner(argoCDManager), client.ForceOwnership}, opts...)
		if err := k.Patch(ctx, u, client.Apply, opts...); err != nil {
			t.Fatalf("server-side apply of MeshInstall %s: %v", name, err)
		}
		return u
	}
	apply()
	t.Cleanup(func() { uninstall(t, name) })
	waitReady(t, name)

	// Compare a dry-run apply with the live object around it; should the
	// operator write the status meanwhile, look again.
	var live, dry *unstructured.Unstructured
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			t.Fatalf("MeshInstall %s kept changing during the dry run", name)
		}
		live = getUnstructured(t, name)
		dry = apply(client.DryRunAll)
		if after := getUnstructured(t, name); after.GetResourceVersion() == live.GetResourceVersion() {
			break
		}
	}
	if dry.GetResourceVersion() != live.GetResourceVersion() || dry.GetGeneration() != live.GetGeneration() {
		t.Errorf("re-applying the same manifest would change the MeshInstall: resourceVersion %s -> %s, generation %d -> %d",
			live.GetResourceVersion(), dry.GetResourceVersion(), live.GetGeneration(), dry.GetGeneration())
	}
	for _, field := range []string{"spec", "metadata.labels", "metadata.annotations"} {
		path := strings.Split(field, ".")
		got, _, _ := unstructured.NestedFieldNoCopy(dry.Object, path...)
		want, _, _ := unstructured.NestedFieldNoCopy(live.Object, path...)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("re-applying the same manifest would change %s:\nlive: %v\nwould be: %v", field, want, got)
		}
	}
	// What Git says is what is there: the live spec, labels and
	// annotations are the manifest's.
	for _, field := range []string{"spec", "metadata.labels", "metadata.annotations"} {
		path := strings.Split(field, ".")
		got, _, _ := unstructured.NestedFieldNoCopy(live.Object, path...)
		want, _, _ := unstructured.NestedFieldNoCopy(manifest.Object, path...)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("live %s differs from the manifest:\nmanifest: %v\nlive: %v", field, want, got)
		}
	}

	// Ownership: the applier owns the spec; everyone else (the operator)
	// owns status and metadata.finalizers, nothing more.
	var managers []string
	appliedSpec := false
	for _, mf := range live.GetManagedFields() {
		managers = append(managers, fmt.Sprintf("%s (%s %s)", mf.Manager, mf.Operation, mf.Subresource))
		owned := map[string]any{}
		if mf.FieldsV1 != nil {
			if err := json.Unmarshal(mf.FieldsV1.Raw, &owned); err != nil {
				t.Fatal(err)
			}
		}
		if mf.Manager == argoCDManager {
			if _, ok := owned["f:spec"]; ok && mf.Operation == metav1.ManagedFieldsOperationApply {
				appliedSpec = true
			}
			continue
		}
		fields := ownedFields(owned, "")
		t.Logf("%s (%s %s) owns %v", mf.Manager, mf.Operation, mf.Subresource, fields)
		for _, f := range fields {
			if f != ".status" && !strings.HasPrefix(f, ".status.") && f != ".metadata.finalizers" {
				t.Errorf("manager %s (%s %s) owns %s; only status and metadata.finalizers may be another manager's than %s",
					mf.Manager, mf.Operation, mf.Subresource, f, argoCDManager)
			}
		}
	}
	if !appliedSpec {
		t.Errorf("%s does not own the spec through Apply; managers: %v", argoCDManager, managers)
	}
}

// ownedFields lists the top-most owned paths of a FieldsV1 set: a field
// with a "." entry or no children is owned as a whole, e.g. ".status" or
// ".metadata.finalizers".
func ownedFields(set map[string]any, prefix string) []string {
	var out []string
	for key, child := range set {
		if key == "." {
			continue
		}
		path := prefix + "." + strings.TrimPrefix(strings.TrimPrefix(key, "f:"), "k:")
		sub, _ := child.(map[string]any)
		if _, whole := sub["."]; whole || len(sub) == 0 || !strings.HasPrefix(key, "f:") {
			out = append(out, path)
			continue
		}
		out = append(out, ownedFields(sub, path)...)
	}
	sort.Strings(out)
	return out
}
