package validation

import (
	"google.golang.org/protobuf/proto"
	telemetry "istio.io/api/telemetry/v1alpha1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateTelemetry(m proto.Message, _ objectMeta, e *errorList) {
	t := m.(*telemetry.Telemetry)
	p := field.NewPath("spec")
	checkPolicyTarget(p, t.Selector, t.TargetRef, t.TargetRefs, e)
	checkProviders := func(p *field.Path, ps []*telemetry.ProviderRef) {
		for i, pr := range ps {
			if pr.Name == "" {
				e.add(p.Index(i).Child("name"), "provider name is required")
			}
		}
	}
	for i, tr := range t.Tracing {
		tp := p.Child("tracing").Index(i)
		checkProviders(tp.Child("providers"), tr.Providers)
		if tr.RandomSamplingPercentage != nil {
			checkPercent(tp.Child("randomSamplingPercentage"), tr.RandomSamplingPercentage.Value, e)
		}
		for _, k := range sortedKeys(tr.CustomTags) {
			kp := tp.Child("customTags").Key(k)
			if k == "" {
				e.add(kp, "tag name must not be empty")
			}
			ct := tr.CustomTags[k]
			switch v := ct.GetType().(type) {
			case nil:
				e.add(kp, "one of literal, environment, header or formatter is required")
			case *telemetry.Tracing_CustomTag_Literal:
				if v.Literal == nil || v.Literal.Value == "" {
					e.add(kp.Child("literal", "value"), "value is required")
				}
			case *telemetry.Tracing_CustomTag_Environment:
				if v.Environment == nil || v.Environment.Name == "" {
					e.add(kp.Child("environment", "name"), "name is required")
				}
			case *telemetry.Tracing_CustomTag_Header:
				if v.Header == nil || v.Header.Name == "" {
					e.add(kp.Child("header", "name"), "name is required")
				}
			}
		}
	}
	for i, mt := range t.Metrics {
		mp := p.Child("metrics").Index(i)
		checkProviders(mp.Child("providers"), mt.Providers)
		for j, o := range mt.Overrides {
			op := mp.Child("overrides").Index(j)
			for _, k := range sortedKeys(o.TagOverrides) {
				kp := op.Child("tagOverrides").Key(k)
				if k == "" {
					e.add(kp, "tag name must not be empty")
				}
				to := o.TagOverrides[k]
				if to != nil && to.Operation == telemetry.MetricsOverrides_TagOverride_UPSERT && to.Value == "" {
					e.add(kp.Child("value"), "value is required when operation is UPSERT")
				}
				if to != nil && to.Operation == telemetry.MetricsOverrides_TagOverride_REMOVE && to.Value != "" {
					e.add(kp.Child("value"), "value must not be set when operation is REMOVE")
				}
			}
		}
	}
	for i, al := range t.AccessLogging {
		ap := p.Child("accessLogging").Index(i)
		checkProviders(ap.Child("providers"), al.Providers)
		if al.Filter != nil && al.Filter.Expression == "" {
			e.add(ap.Child("filter", "expression"), "expression must not be empty")
		}
	}
}
