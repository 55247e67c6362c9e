package injector

import (
	"strings"
	"testing"
)

// A malformed annotation makes the API server refuse the pod with a
// message naming the annotation and its value.
func TestMalformedAnnotationsRefused(t *testing.T) {
	ns := namespace(t, injectionEnabled)
	cases := map[string]string{
		"sidecar.istio.io/proxyCPU":                        "a lot",
		"sidecar.istio.io/proxyMemoryLimit":                "1Gb",
		"traffic.sidecar.istio.io/includeInboundPorts":     "80,http",
		"traffic.sidecar.istio.io/excludeOutboundPorts":    "99999",
		"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/40",
		"proxy.istio.io/config":                            "holdApplicationUntilProxyStarts: {",
	}
	for ann, val := range cases {
		t.Run(ann, func(t *testing.T) {
			pod := appPod(ns)
			pod.Annotations = map[string]string{ann: val}
			_, err := create(t, pod)
			if err == nil {
				t.Fatalf("a pod with %s=%q was created", ann, val)
			}
			msg := err.Error()
			if !strings.Contains(msg, ann) || !strings.Contains(msg, val) || !strings.Contains(msg, "sidecar-injector.istio.io") {
				t.Errorf("the refusal does not name the annotation and value: %s", msg)
			}
		})
	}
	// The same annotations outside the mesh do not matter.
	pod := appPod(namespace(t, nil))
	pod.Annotations = map[string]string{"sidecar.istio.io/proxyCPU": "a lot"}
	assertNotInjected(t, mustCreate(t, pod))
}
