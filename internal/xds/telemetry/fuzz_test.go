package telemetry

import (
	"testing"

	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// FuzzTelemetry feeds arbitrary Telemetry specs (the CRD's JSON) at the
// three levels: resolution must never panic and everything it returns
// must validate.
func FuzzTelemetry(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"tracing":[{"providers":[{"name":"otel"},{"name":"zipkin"}],"randomSamplingPercentage":-3,"customTags":{"":{"literal":{"value":"x"}},"h":{"header":{"name":"Bad Header"}},"e":{"environment":{}}}}]}`,
		`{"accessLogging":[{"providers":[{"name":"text-log"},{"name":"envoy"},{"name":"json-log"}],"filter":{"expression":"x"}}],"metrics":[{"providers":[{"name":"sd"}],"overrides":[{"match":{"customMetric":"x"},"disabled":true}]}]}`,
		`{"tracing":[{"match":{"mode":"CLIENT"},"disableSpanReporting":true}],"accessLogging":[{"match":{"mode":"SERVER"},"disabled":false}]}`,
	} {
		f.Add(s, s, s)
	}
	base := newPush(f, testMesh)
	f.Fuzz(func(t *testing.T, root, ns, wl string) {
		var objs []model.Config[*telemetryv1alpha1.Telemetry]
		for i, spec := range []string{root, ns, wl} {
			tm := &telemetryv1alpha1.Telemetry{}
			if err := tm.UnmarshalJSON([]byte(spec)); err != nil {
				t.Skip()
			}
			tm.Selector, tm.TargetRef, tm.TargetRefs = nil, nil, nil
			objs = append(objs, model.Config[*telemetryv1alpha1.Telemetry]{Meta: model.Meta{
				Kind: model.KindTelemetry, Namespace: []string{rootNS, "bookinfo", "bookinfo"}[i], Name: []string{"r", "n", "w"}[i],
			}, Spec: tm})
		}
		objs[2].Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}
		push := *base
		push.Telemetries = objs
		for _, mode := range []telemetryv1alpha1.WorkloadMode{telemetryv1alpha1.WorkloadMode_CLIENT, telemetryv1alpha1.WorkloadMode_SERVER, telemetryv1alpha1.WorkloadMode_CLIENT_AND_SERVER} {
			s := ForMode(&push, sidecar("bookinfo", reviews), mode)
			validateSettings(t, s)
			if s.Tracing != nil {
				if v := s.Tracing.GetRandomSampling().GetValue(); v < 0 || v > 100 {
					t.Fatalf("sampling %v", v)
				}
			}
		}
	})
}
