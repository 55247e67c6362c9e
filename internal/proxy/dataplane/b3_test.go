package dataplane

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestB3(t *testing.T) {
	cases := []struct {
		name    string
		hdr     map[string]string
		trace   string
		span    string
		sampled bool
		valid   bool
	}{
		{"single", map[string]string{"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"}, "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", true, true},
		{"single not sampled", map[string]string{"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"}, "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", false, true},
		{"single debug", map[string]string{"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"}, "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", true, true},
		{"single sampling only", map[string]string{"b3": "1"}, "", "", false, false},
		{"multi 64-bit trace id", map[string]string{"X-B3-TraceId": "a3ce929d0e0e4736", "X-B3-SpanId": "00f067aa0ba902b7", "X-B3-Sampled": "1"}, "0000000000000000a3ce929d0e0e4736", "00f067aa0ba902b7", true, true},
		{"multi flags", map[string]string{"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Flags": "1"}, "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", true, true},
		{"multi bad span", map[string]string{"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-SpanId": "zz"}, "", "", false, false},
		{"none", map[string]string{}, "", "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range c.hdr {
				h.Set(k, v)
			}
			sc := trace.SpanContextFromContext(B3{}.Extract(context.Background(), propagation.HeaderCarrier(h)))
			if sc.IsValid() != c.valid {
				t.Fatalf("valid = %v", sc.IsValid())
			}
			if !c.valid {
				return
			}
			if sc.TraceID().String() != c.trace || sc.SpanID().String() != c.span || sc.IsSampled() != c.sampled {
				t.Fatalf("got %s %s sampled=%v", sc.TraceID(), sc.SpanID(), sc.IsSampled())
			}
			out := http.Header{}
			B3{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), propagation.HeaderCarrier(out))
			want := "0"
			if c.sampled {
				want = "1"
			}
			if out.Get("X-B3-TraceId") != c.trace || out.Get("X-B3-SpanId") != c.span || out.Get("X-B3-Sampled") != want {
				t.Fatalf("injected %v", out)
			}
		})
	}
}
