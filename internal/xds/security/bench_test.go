package security

import "testing"

// BenchmarkInboundHTTPFilters measures the translation of the
// representative policies (golden_test.go) for one inbound HTTP chain.
func BenchmarkInboundHTTPFilters(b *testing.B) {
	push := representativePush(b)
	proxy := sidecar("bookinfo", map[string]string{"app": "reviews", "version": "v1"})
	b.ReportAllocs()
	for b.Loop() {
		if len(InboundHTTPFilters(push, proxy, 9080)) == 0 {
			b.Fatal("no filters")
		}
	}
}

// BenchmarkInboundMTLSMode measures the PeerAuthentication lookup done
// for every inbound port.
func BenchmarkInboundMTLSMode(b *testing.B) {
	push := representativePush(b)
	proxy := sidecar("bookinfo", map[string]string{"app": "reviews", "version": "v1"})
	b.ReportAllocs()
	for b.Loop() {
		if InboundMTLSMode(push, proxy, 9090) != ModeDisable {
			b.Fatal("wrong mode")
		}
	}
}
