package telemetry

import "testing"

func TestXDSSettings(t *testing.T) {
	push := newPush(t, testMesh, tel(t, rootNS, "mesh", 0, `
tracing: [{providers: [{name: otel}], randomSamplingPercentage: 7}]
accessLogging: [{providers: [{name: envoy}, {name: nope}]}]
metrics: [{overrides: [{disabled: true}]}]`))
	proxy := sidecar("bookinfo", reviews)
	got := XDSSettings(push, proxy)
	if got.Tracing.GetRandomSampling().GetValue() != 7 || len(got.AccessLogs) != 1 || got.Stats {
		t.Errorf("XDSSettings = %+v", got)
	}
	if s := SkippedFor(push, proxy); len(s) != 1 || s[0].Name != "mesh" {
		t.Errorf("SkippedFor = %+v, want the unknown access log provider of mesh", s)
	}
}
