package controllers

import (
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// Every kind any profile renders (with autoscaling and disruption budgets
// on) must be watched, or drift on it would go unrepaired.
func TestEveryRenderedKindIsWatched(t *testing.T) {
	managed := ManagedGroupKinds()
	specs := []string{"profile: demo", "profile: default", `
profile: demo
components:
  controlPlane: {autoscaling: {enabled: true}}
values:
  global: {}
  controlplane: {podDisruptionBudget: {enabled: true}}
  gateway: {podDisruptionBudget: {enabled: true}}
  injector: {podDisruptionBudget: {enabled: true}}
`}
	for _, in := range specs {
		res := renderYAML(t, in)
		for _, o := range res.Objects {
			if gk := o.GroupVersionKind().GroupKind(); !managed[gk] {
				t.Errorf("%q renders %s, which ManagedKinds does not watch", in, gk)
			}
		}
	}
}

// renderYAML renders a MeshInstall spec written as YAML, as the operator would.
func renderYAML(t *testing.T, spec string) *render.Result {
	t.Helper()
	user := &v1alpha1.MeshInstallSpec{}
	if err := yaml.UnmarshalStrict([]byte(spec), user); err != nil {
		t.Fatal(err)
	}
	res, err := render.RenderUserSpec("mesh", user, render.Options{Version: "0.1.0", Hub: "h", Image: "i"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}
