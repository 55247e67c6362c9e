package telemetry

import "testing"

// BenchmarkForProxy measures resolving a proxy's telemetry with three
// applicable Telemetry levels.
func BenchmarkForProxy(b *testing.B) {
	push := newPush(b, testMesh,
		tel(b, rootNS, "mesh", 0, `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]`),
		tel(b, "bookinfo", "ns", 1, `accessLogging: [{providers: [{name: text-log}]}]`),
		tel(b, "bookinfo", "wl", 2, `{selector: {matchLabels: {app: reviews}}, metrics: [{overrides: [{disabled: true}]}]}`))
	proxy := sidecar("bookinfo", reviews)
	b.ReportAllocs()
	for b.Loop() {
		if s := ForProxy(push, proxy); s.Tracing == nil {
			b.Fatal("no tracing")
		}
	}
}
