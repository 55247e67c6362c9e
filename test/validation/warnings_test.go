package validation

import (
	"context"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// warningRecorder collects the warnings the API server returns.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// TestDeprecatedFieldWarns checks that a deprecated field is accepted with
// a warning that names it, which kubectl prints as "Warning: ...".
func TestDeprecatedFieldWarns(t *testing.T) {
	ns := createNamespace(t, "warn")
	rec := &warningRecorder{}
	cfg := rest.CopyConfig(adminConfig)
	cfg.WarningHandler = rec
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o := mustObject(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: old}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 5}
`)
	gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	if _, err := dc.Resource(gvr).Namespace(ns).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := "spec.trafficPolicy.outlierDetection.consecutiveErrors: consecutiveErrors is deprecated"
	if !strings.Contains(strings.Join(rec.msgs, "\n"), want) {
		t.Errorf("warnings %q, want one containing %q", rec.msgs, want)
	}
}
