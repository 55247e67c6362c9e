package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// config/default, built with the kustomize library as `kubectl apply -k`
// would, is accepted object by object by the API server (server-side apply,
// dry run), and holds what an operator install needs.
func TestConfigDefaultIsAccepted(t *testing.T) {
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(), "config", "default"))
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	ctx := context.Background()
	kinds := map[string]int{}
	var objects []*unstructured.Unstructured
	for _, r := range resMap.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatal(err)
		}
		kinds[u.GetKind()]++
		objects = append(objects, u)
	}
	for kind, n := range map[string]int{"Namespace": 1, "CustomResourceDefinition": 1, "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1} {
		if kinds[kind] != n {
			t.Errorf("config/default has %d %s, want %d (all: %v)", kinds[kind], kind, n, kinds)
		}
	}
	// Namespaced objects are dry-run into a namespace that exists; create it
	// for real first, as kubectl apply would in the same run.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mizzen-system"}}
	if err := k.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, o := range objects {
		if o.GetNamespace() != "" && o.GetNamespace() != "mizzen-system" {
			t.Errorf("%s %s is in namespace %q, want mizzen-system", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		if !strings.HasPrefix(o.GetName(), "mizzen-") && o.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s %s lacks the mizzen- prefix", o.GetKind(), o.GetName())
		}
		if err := k.Patch(ctx, o.DeepCopy(), client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership, client.DryRunAll); err != nil {
			t.Errorf("the API server refused %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() == "Deployment" {
			checkManagerDeployment(t, o)
		}
		if o.GetKind() == "ClusterRole" {
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			for _, r := range rules {
				rule := r.(map[string]any)
				if has(rule["apiGroups"], "*") && has(rule["resources"], "*") {
					t.Errorf("the operator's ClusterRole grants * on *: %v", rule)
				}
				if has(rule["verbs"], "escalate") || has(rule["verbs"], "bind") || has(rule["verbs"], "impersonate") {
					t.Errorf("the operator's ClusterRole can escalate: %v", rule)
				}
			}
		}
	}
}

func checkManagerDeployment(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	pod, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
	if nonRoot, _, _ := unstructured.NestedBool(pod, "securityContext", "runAsNonRoot"); !nonRoot {
		t.Error("the manager pod may run as root")
	}
	containers, _, _ := unstructured.NestedSlice(pod, "containers")
	if len(containers) != 1 {
		t.Fatalf("manager has %d containers", len(containers))
	}
	c := containers[0].(map[string]any)
	if ro, _, _ := unstructured.NestedBool(c, "securityContext", "readOnlyRootFilesystem"); !ro {
		t.Error("the manager's root filesystem is writable")
	}
	for _, field := range []string{"livenessProbe", "readinessProbe", "resources"} {
		if _, ok := c[field]; !ok {
			t.Errorf("the manager container has no %s", field)
		}
	}
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	if !has(toAnySlice(args), "--leader-elect") {
		t.Errorf("the manager does not elect a leader: args %v", args)
	}
	if img, _ := c["image"].(string); !strings.HasPrefix(img, "ghcr.io/mizzen-mesh/mizzen:") {
		t.Errorf("manager image = %q", img)
	}
}

func has(list any, want string) bool {
	items, _ := list.([]any)
	for _, i := range items {
		if s, _ := i.(string); s == want {
			return true
		}
	}
	return false
}

func toAnySlice(s []string) []any {
	out := make([]any, len(s))
	for i := range s {
		out[i] = s[i]
	}
	return out
}
