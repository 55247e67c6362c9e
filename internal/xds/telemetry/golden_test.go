package telemetry

import (
	"bytes"
	"fmt"
	"testing"

	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/golden"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// TestGolden renders the settings of a representative mesh: a mesh-wide
// Telemetry with OpenTelemetry tracing, sampling and custom tags, a
// namespace that adds a file access log, and a workload whose metrics
// are disabled; each direction and both.
func TestGolden(t *testing.T) {
	push := newPush(t, testMesh,
		tel(t, rootNS, "mesh-default", 0, `
tracing:
- providers: [{name: otel}]
  randomSamplingPercentage: 10
  customTags:
    mesh: {literal: {value: prod}}
    user: {header: {name: x-user, defaultValue: none}}`),
		tel(t, "bookinfo", "logs", 1, `
accessLogging:
- providers: [{name: text-log}]
tracing:
- match: {mode: SERVER}
  randomSamplingPercentage: 100`),
		tel(t, "bookinfo", "reviews-no-metrics", 2, `
selector: {matchLabels: {app: reviews}}
metrics:
- providers: [{name: prometheus}]
  overrides: [{match: {metric: ALL_METRICS}, disabled: true}]`),
	)
	push.Mesh.DefaultConfig = mesh(t, `{defaultConfig: {tracing: {sampling: 3}}}`).DefaultConfig
	proxy := sidecar("bookinfo", reviews)
	var out bytes.Buffer
	for _, c := range []struct {
		name string
		s    Settings
	}{
		{"ForProxy", ForProxy(push, proxy)},
		{"ForMode CLIENT", ForMode(push, proxy, telemetryv1alpha1.WorkloadMode_CLIENT)},
		{"ForMode SERVER", ForMode(push, proxy, telemetryv1alpha1.WorkloadMode_SERVER)},
	} {
		validateSettings(t, c.s)
		fmt.Fprintf(&out, "---\n# %s\n", c.name)
		out.Write(settingsYAML(t, c.s))
	}
	golden.AssertYAML(t, "testdata/representative.yaml", out.Bytes())
}

func settingsYAML(t testing.TB, s Settings) []byte {
	t.Helper()
	doc := map[string]any{"stats": s.Stats, "tracingProvider": s.TracingProvider}
	if s.Tracing != nil {
		doc["tracing"] = toJSON(t, s.Tracing)
	}
	var logs []any
	for _, a := range s.AccessLogs {
		logs = append(logs, toJSON(t, a))
	}
	doc["accessLogs"] = logs
	doc["skipped"] = append([]xds.Skipped{}, s.Skipped...)
	y, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return y
}
