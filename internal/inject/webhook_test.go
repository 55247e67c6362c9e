package inject

import (
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

func reviewFor(t testing.TB, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "3f0c7a42-0000-4000-8000-000000000001",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func review(t testing.TB, h *Handler, pod *corev1.Pod) (*admissionv1.AdmissionResponse, string) {
	t.Helper()
	out, result, err := h.Review(reviewFor(t, pod))
	if err != nil {
		t.Fatal(err)
	}
	var r admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	if r.Response == nil || r.Response.UID != "3f0c7a42-0000-4000-8000-000000000001" || r.APIVersion != "admission.k8s.io/v1" {
		t.Fatalf("bad AdmissionReview response %s", out)
	}
	return r.Response, result
}

// applyPatch applies the response's patch as the API server would.
func applyPatch(t testing.TB, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw, _ := json.Marshal(pod)
	if len(resp.Patch) == 0 {
		return pod
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(patched, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReviewPatchesAndIsIdempotent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := NewHandler(chartConfig(t, "profile: minimal"), m)
	pod := &corev1.Pod{}
	mustYAML(t, appPod, pod)

	resp, result := review(t, h, pod)
	if !resp.Allowed || result != ResultInjected || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v, result %s", resp, result)
	}
	injected := applyPatch(t, pod, resp)
	want, _ := Inject(pod, h.Config())
	if p, _ := Patch(want, injected); p != nil {
		t.Fatalf("the patch does not give the injected pod: %s", p)
	}
	// The patch touches only what injection adds.
	var ops []struct{ Op, Path string }
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Op == "remove" || strings.HasPrefix(op.Path, "/spec/serviceAccountName") || strings.HasPrefix(op.Path, "/metadata/ownerReferences") {
			t.Errorf("unexpected patch operation %s %s", op.Op, op.Path)
		}
	}

	resp, result = review(t, h, injected)
	if !resp.Allowed || len(resp.Patch) != 0 || resp.PatchType != nil || result != ResultSkipped {
		t.Fatalf("an injected pod must be allowed unchanged: %+v", resp)
	}
	if got := counterValue(t, m.Injections.WithLabelValues(ResultInjected)); got != 1 {
		t.Errorf("injections{injected} = %v", got)
	}
}

func TestReviewDeniesMalformedAnnotation(t *testing.T) {
	m := NewMetrics(nil)
	h := NewHandler(chartConfig(t, "profile: minimal"), m)
	pod := &corev1.Pod{}
	mustYAML(t, appPod, pod)
	pod.Annotations = map[string]string{AnnotationExcludeOutRanges: "10.0.0.0/99"}
	resp, result := review(t, h, pod)
	if resp.Allowed || result != ResultDenied || resp.Result == nil ||
		!strings.Contains(resp.Result.Message, AnnotationExcludeOutRanges) || !strings.Contains(resp.Result.Message, "10.0.0.0/99") {
		t.Fatalf("response %+v", resp)
	}
	if got := counterValue(t, m.Denials.WithLabelValues(AnnotationExcludeOutRanges)); got != 1 {
		t.Errorf("denials = %v", got)
	}
}

func TestReviewWithoutConfigDenies(t *testing.T) {
	h := NewHandler(nil, nil)
	pod := &corev1.Pod{}
	mustYAML(t, appPod, pod)
	resp, _ := review(t, h, pod)
	if resp.Allowed {
		t.Fatal("a pod was let through uninjected before the config was loaded")
	}
}

func TestReviewRecoversFromPanic(t *testing.T) {
	// A nil selector makes Skip panic: the handler must deny, not crash.
	cfg := chartConfig(t, "profile: minimal")
	cfg.never = []labels.Selector{nil}
	h := NewHandler(cfg, nil)
	pod := &corev1.Pod{}
	mustYAML(t, appPod, pod)
	resp, result := review(t, h, pod)
	if resp.Allowed || result != ResultError || !strings.Contains(resp.Result.Message, "internal error") {
		t.Fatalf("response %+v, result %s", resp, result)
	}
}

func TestReviewRejectsGarbage(t *testing.T) {
	h := NewHandler(nil, nil)
	if _, _, err := h.Review([]byte("{not json")); err == nil {
		t.Error("garbage was accepted")
	}
	if _, _, err := h.Review([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`)); err == nil {
		t.Error("a review without request was accepted")
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// The patch applies to the pod the API server holds and gives exactly the
// injected pod, adding the sidecar's containers rather than rewriting the
// app's, with and without existing init containers and native sidecars.
func TestPatchMinimalAndExact(t *testing.T) {
	for _, native := range []bool{true, false} {
		for _, withInit := range []bool{false, true} {
			cfg := chartConfig(t, "profile: minimal\nvalues:\n  global:\n    imagePullSecrets: [mesh-pull]")
			cfg.NativeSidecarsSupported = native
			pod := &corev1.Pod{}
			mustYAML(t, appPod, pod)
			if withInit {
				pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "busybox"}}
				// A bare pod: no labels, annotations or service account.
				pod.Labels, pod.Annotations, pod.Spec.ServiceAccountName, pod.OwnerReferences = nil, nil, "", nil
				pod.Name = "bare"
			} else {
				pod.Annotations = map[string]string{AnnotationProxyCPU: "1", AnnotationProxyConfig: "holdApplicationUntilProxyStarts: true"}
				pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "app-pull"}}
			}
			resp, _ := review(t, NewHandler(cfg, nil), pod)
			got := applyPatch(t, pod, resp)
			want, _ := Inject(pod, cfg)
			wantJSON, _ := json.Marshal(want)
			gotJSON, _ := json.Marshal(got)
			if string(wantJSON) != string(gotJSON) {
				t.Fatalf("native=%v init=%v: patched pod differs from the injected one", native, withInit)
			}
			var ops []struct{ Op, Path string }
			if err := json.Unmarshal(resp.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			for _, op := range ops {
				if op.Op == "remove" || strings.HasSuffix(op.Path, "/name") || strings.HasSuffix(op.Path, "/image") {
					t.Errorf("native=%v init=%v: operation %s %s rewrites a user's container", native, withInit, op.Op, op.Path)
				}
			}
		}
	}
}

// /ready stays unready until both the config and the serving certificate
// are in place.
func TestNotReadyUntilConfigAndCert(t *testing.T) {
	r := &runner{handler: NewHandler(nil, nil)}
	if r.notReady() == "" {
		t.Fatal("ready without config")
	}
	r.handler.SetConfig(chartConfig(t, "profile: minimal"))
	if r.notReady() == "" {
		t.Fatal("ready without a serving certificate")
	}
	b, err := renew(nil, certSettings{hosts: []string{"x.y.svc"}, validity: time.Hour, caValidity: 2 * time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(b.cert, b.key)
	if err != nil {
		t.Fatal(err)
	}
	r.cert.Store(&pair)
	if msg := r.notReady(); msg != "" {
		t.Fatalf("not ready: %s", msg)
	}
}
