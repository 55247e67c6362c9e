package controllers

import (
	"os"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/component-helpers/auth/rbac/validation"
	"sigs.k8s.io/yaml"
)

// The operator's generated ClusterRole covers every rule of every Role and
// ClusterRole the charts render, or the API server would refuse to let the
// operator create them.
func TestOperatorRoleCoversWhatTheChartsGrant(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	operatorRole := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, operatorRole); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"profile: demo", "profile: default\nrevision: canary"} {
		res := renderYAML(t, in)
		for _, o := range res.Objects {
			var rules []rbacv1.PolicyRule
			switch o.GetKind() {
			case "ClusterRole":
				r := &rbacv1.ClusterRole{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, r); err != nil {
					t.Fatal(err)
				}
				rules = r.Rules
			case "Role":
				r := &rbacv1.Role{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, r); err != nil {
					t.Fatal(err)
				}
				rules = r.Rules
			default:
				continue
			}
			if ok, missing := validation.Covers(operatorRole.Rules, rules); !ok {
				t.Errorf("%s %s grants what the operator's role lacks: %+v", o.GetKind(), o.GetName(), missing)
			}
		}
	}
}
