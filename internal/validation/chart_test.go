package validation_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/internal/validation"
)

// renderWebhook renders a MeshInstall spec and returns its
// ValidatingWebhookConfiguration.
func renderWebhook(t *testing.T, spec string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	user := &v1alpha1.MeshInstallSpec{}
	if err := yaml.UnmarshalStrict([]byte(spec), user); err != nil {
		t.Fatal(err)
	}
	res, err := render.RenderUserSpec("mesh", user, render.Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"})
	if err != nil {
		t.Fatal(err)
	}
	var found []*admissionregistrationv1.ValidatingWebhookConfiguration
	for _, o := range res.Objects {
		if o.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		raw, _ := json.Marshal(o.Object)
		v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
		found = append(found, v)
	}
	if len(found) != 1 {
		t.Fatalf("want one ValidatingWebhookConfiguration, got %d", len(found))
	}
	return found[0]
}

// TestChartWebhook checks the chart's ValidatingWebhookConfiguration: its
// name and selectors per revision, that it sends istiod exactly the kinds
// Validate knows, and that it leaves caBundle to istiod.
func TestChartWebhook(t *testing.T) {
	for _, tc := range []struct {
		spec, revision, name, service string
		webhooks                      map[string]metav1.LabelSelectorRequirement
	}{
		{"profile: minimal\n", "default", "istio-validator-istio-system", "istiod", map[string]metav1.LabelSelectorRequirement{
			"validation.istio.io":     {Key: "istio.io/rev", Operator: metav1.LabelSelectorOpDoesNotExist},
			"rev.validation.istio.io": {Key: "istio.io/rev", Operator: metav1.LabelSelectorOpIn, Values: []string{"default"}},
		}},
		{"profile: minimal\nrevision: canary\n", "canary", "istio-validator-canary-istio-system", "istiod-canary", map[string]metav1.LabelSelectorRequirement{
			"rev.validation.istio.io": {Key: "istio.io/rev", Operator: metav1.LabelSelectorOpIn, Values: []string{"canary"}},
		}},
	} {
		vwc := renderWebhook(t, tc.spec)
		if vwc.Name != tc.name {
			t.Errorf("name %q, want %q", vwc.Name, tc.name)
		}
		if got := validation.WebhookConfigName(tc.revision, "istio-system"); got != vwc.Name {
			t.Errorf("WebhookConfigName(%q) = %q, the chart renders %q", tc.revision, got, vwc.Name)
		}
		if len(vwc.Webhooks) != len(tc.webhooks) {
			t.Errorf("%s: %d webhooks, want %d", tc.name, len(vwc.Webhooks), len(tc.webhooks))
		}
		var want []string
		for _, r := range validation.Resources() {
			want = append(want, r.GroupVersionKind.Group+"/"+r.GroupVersionKind.Version+"/"+r.Resource)
		}
		slices.Sort(want)
		for _, w := range vwc.Webhooks {
			sel, ok := tc.webhooks[w.Name]
			if !ok {
				t.Errorf("%s: unexpected webhook %s", tc.name, w.Name)
				continue
			}
			if w.ObjectSelector == nil || len(w.ObjectSelector.MatchExpressions) != 1 ||
				!equalRequirement(w.ObjectSelector.MatchExpressions[0], sel) {
				t.Errorf("%s %s: objectSelector %+v, want %+v", tc.name, w.Name, w.ObjectSelector, sel)
			}
			cc := w.ClientConfig
			if len(cc.CABundle) != 0 {
				t.Errorf("%s %s: the chart sets caBundle; istiod owns it", tc.name, w.Name)
			}
			if cc.Service == nil || cc.Service.Name != tc.service || cc.Service.Namespace != "istio-system" ||
				cc.Service.Path == nil || *cc.Service.Path != "/validate" || cc.Service.Port == nil || *cc.Service.Port != 443 {
				t.Errorf("%s %s: clientConfig %+v", tc.name, w.Name, cc.Service)
			}
			if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail ||
				w.MatchPolicy == nil || *w.MatchPolicy != admissionregistrationv1.Equivalent ||
				w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				!slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
				t.Errorf("%s %s: policy fields %+v", tc.name, w.Name, w)
			}
			var got []string
			for _, r := range w.Rules {
				if !slices.Equal(r.Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}) {
					t.Errorf("%s %s: operations %v", tc.name, w.Name, r.Operations)
				}
				for _, g := range r.APIGroups {
					for _, v := range r.APIVersions {
						for _, res := range r.Resources {
							got = append(got, g+"/"+v+"/"+res)
						}
					}
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s %s: rules cover\n  %s\nValidate knows\n  %s", tc.name, w.Name, strings.Join(got, " "), strings.Join(want, " "))
			}
		}
	}
}

func equalRequirement(a, b metav1.LabelSelectorRequirement) bool {
	return a.Key == b.Key && a.Operator == b.Operator && slices.Equal(a.Values, b.Values)
}
