package validation

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// FuzzValidateJSON checks that no input makes Validate panic: the webhook
// fails closed, so a panic would refuse the object with a useless message.
// Seeds are the valid objects of the other tests.
func FuzzValidateJSON(f *testing.F) {
	for name, spec := range validObjects {
		_ = name
		raw, _ := yaml.YAMLToJSON([]byte(obj("networking.istio.io/v1", "VirtualService", spec)))
		f.Add(raw, 0)
	}
	for _, spec := range validSecurity {
		raw, _ := yaml.YAMLToJSON([]byte(obj("security.istio.io/v1", "AuthorizationPolicy", spec)))
		f.Add(raw, 5)
	}
	f.Add([]byte(`{"spec":{"http":[null],"hosts":[null]}}`), 0)
	f.Add([]byte(`{"spec":{"portLevelMtls":{"1":null}}}`), 5)
	f.Add([]byte(`{"spec":"x"}`), 1)
	res := Resources()
	f.Fuzz(func(t *testing.T, raw []byte, kind int) {
		if kind < 0 {
			kind = -kind
		}
		r := res[kind%len(res)]
		_ = ValidateJSON(schema.GroupVersionKind(r.GroupVersionKind), raw)
	})
}
