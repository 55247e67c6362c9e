package injector

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Istio's selection rules, decided by the chart's webhook selectors and
// re-checked by the injector.
func TestSelection(t *testing.T) {
	enabled := namespace(t, injectionEnabled)
	plain := namespace(t, nil)
	canaryNS := namespace(t, map[string]string{"istio.io/rev": "canary"})

	cases := []struct {
		name     string
		ns       string
		mutate   func(*corev1.Pod)
		revision string // "" = not injected
	}{
		{"labelled namespace", enabled, nil, "default"},
		{"plain namespace", plain, nil, ""},
		{"inject=false label in a labelled namespace", enabled, func(p *corev1.Pod) { p.Labels["sidecar.istio.io/inject"] = "false" }, ""},
		{"inject=false annotation in a labelled namespace", enabled, func(p *corev1.Pod) {
			p.Annotations = map[string]string{"sidecar.istio.io/inject": "false"}
		}, ""},
		{"inject=true label in a plain namespace", plain, func(p *corev1.Pod) { p.Labels["sidecar.istio.io/inject"] = "true" }, "default"},
		{"hostNetwork pod in a labelled namespace", enabled, func(p *corev1.Pod) { p.Spec.HostNetwork = true }, ""},
		{"namespace of revision canary", canaryNS, nil, "canary"},
		{"pod of revision canary in a plain namespace", plain, func(p *corev1.Pod) { p.Labels["istio.io/rev"] = "canary" }, "canary"},
		{"inject=false in a canary namespace", canaryNS, func(p *corev1.Pod) { p.Labels["sidecar.istio.io/inject"] = "false" }, ""},
		{"inject=true in kube-system", "kube-system", func(p *corev1.Pod) { p.Labels["sidecar.istio.io/inject"] = "true" }, ""},
		{"inject=true in the mesh namespace", meshNamespace, func(p *corev1.Pod) { p.Labels["sidecar.istio.io/inject"] = "true" }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := appPod(tc.ns)
			if tc.mutate != nil {
				tc.mutate(pod)
			}
			got := mustCreate(t, pod)
			if tc.revision == "" {
				assertNotInjected(t, got)
			} else {
				assertInjected(t, got, tc.revision)
			}
		})
	}
}

// A labelled mesh namespace is still never injected: the chart's selector
// excludes it by name and the injector re-checks.
func TestMeshNamespaceNeverInjected(t *testing.T) {
	ns := &corev1.Namespace{}
	if err := k.Get(t.Context(), keyOf(meshNamespace), ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels["istio-injection"] = "enabled"
	if err := k.Update(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = k.Get(ctx, keyOf(meshNamespace), ns)
		delete(ns.Labels, "istio-injection")
		_ = k.Update(ctx, ns)
	})
	assertNotInjected(t, mustCreate(t, appPod(meshNamespace)))
}
