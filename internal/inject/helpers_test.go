package inject

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// chartConfig renders a MeshInstall spec with the operator's renderer and
// parses the injector ConfigMap it produces: the tests read the same
// settings the injector reads in a cluster.
func chartConfig(t testing.TB, spec string) *Config {
	t.Helper()
	user := &v1alpha1.MeshInstallSpec{}
	if err := yaml.UnmarshalStrict([]byte(spec), user); err != nil {
		t.Fatal(err)
	}
	res, err := render.RenderUserSpec("mesh", user, render.Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Objects {
		if o.GetKind() != "ConfigMap" || o.GetLabels()["app"] != "sidecar-injector" {
			continue
		}
		policy, _, _ := unstructured.NestedString(o.Object, "data", "config")
		values, _, _ := unstructured.NestedString(o.Object, "data", "values")
		cfg, err := ParseConfig([]byte(policy), []byte(values))
		if err != nil {
			t.Fatal(err)
		}
		cfg.MeshNamespace = o.GetNamespace()
		cfg.NativeSidecarsSupported = true
		return cfg
	}
	t.Fatal("the render has no injector ConfigMap")
	return nil
}

func mustYAML(t testing.TB, s string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(s), into); err != nil {
		t.Fatal(err)
	}
}
