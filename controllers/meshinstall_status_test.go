package controllers

import (
	"errors"
	"strings"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
)

func TestSummarize(t *testing.T) {
	healthy := []v1alpha1.ComponentStatus{
		{Name: "controlplane", State: v1alpha1.ComponentHealthy},
		{Name: "kiali", State: v1alpha1.ComponentDisabled},
	}
	progressing := []v1alpha1.ComponentStatus{
		{Name: "controlplane", State: v1alpha1.ComponentProgressing, Message: "Deployment istio-system/istiod: Available: 0/1"},
	}
	degraded := []v1alpha1.ComponentStatus{
		{Name: "controlplane", State: v1alpha1.ComponentDegraded, Message: "Deployment istio-system/istiod: Progress deadline exceeded"},
	}
	type want struct {
		ready, reconciling, stalled string // condition status, or "" for absent
		reason                      string // Ready's reason
		message                     string // part of Ready's message
		observed                    bool   // observedGeneration set to the generation
	}
	cases := []struct {
		name string
		out  outcome
		want want
	}{
		{"all healthy", outcome{components: healthy},
			want{"True", "", "", ReasonInstallSucceeded, "1 components healthy", true}},
		{"nothing enabled", outcome{components: []v1alpha1.ComponentStatus{{Name: "base", State: v1alpha1.ComponentDisabled}}},
			want{"True", "", "", ReasonNothingToInstall, "no component", true}},
		{"progressing", outcome{components: progressing},
			want{"False", "True", "", ReasonProgressingComponents, "waiting for: controlplane (Deployment istio-system/istiod", true}},
		{"degraded", outcome{components: degraded},
			want{"False", "", "True", ReasonComponentsDegraded, "degraded: controlplane", true}},
		{"stalled", outcome{err: stalled(ReasonRenderFailed, "rendering controlplane: bad")},
			want{"False", "", "True", ReasonRenderFailed, "rendering controlplane: bad", true}},
		{"transient", outcome{err: transient(ReasonApplyFailed, errors.New("connection refused"))},
			want{"False", "True", "", ReasonApplyFailed, "connection refused", false}},
		{"uninstalling", outcome{uninstalling: []string{"a", "b", "c", "d"}},
			want{"False", "True", "", ReasonUninstalling, "4 objects to be deleted: a, b, c and 1 more", false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &v1alpha1.MeshInstall{ObjectMeta: metav1.ObjectMeta{Generation: 7}}
			// Start from the opposite state, so stale conditions must be cleared.
			setCondition(obj, ConditionStalled, metav1.ConditionTrue, "Old", "old")
			setCondition(obj, ConditionReconciling, metav1.ConditionTrue, "Old", "old")
			obj.Status.ObservedGeneration = 6
			summarize(obj, tc.out)
			for typ, want := range map[string]string{ConditionReady: tc.want.ready, ConditionReconciling: tc.want.reconciling, ConditionStalled: tc.want.stalled} {
				c := apimeta.FindStatusCondition(obj.Status.Conditions, typ)
				got := ""
				if c != nil {
					got = string(c.Status)
				}
				if got != want {
					t.Errorf("%s = %q, want %q", typ, got, want)
				}
			}
			ready := apimeta.FindStatusCondition(obj.Status.Conditions, ConditionReady)
			if ready.Reason != tc.want.reason || !strings.Contains(ready.Message, tc.want.message) {
				t.Errorf("Ready = %s: %q, want %s containing %q", ready.Reason, ready.Message, tc.want.reason, tc.want.message)
			}
			if ready.ObservedGeneration != 7 {
				t.Errorf("Ready.observedGeneration = %d, want 7", ready.ObservedGeneration)
			}
			if got := obj.Status.ObservedGeneration == 7; got != tc.want.observed {
				t.Errorf("status.observedGeneration = %d; set for this generation = %v, want %v", obj.Status.ObservedGeneration, got, tc.want.observed)
			}
		})
	}
}
