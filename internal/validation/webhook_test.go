package validation

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

func newTestHandler(t *testing.T) (http.Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := NewHandler(slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

// review POSTs an AdmissionReview for the YAML object doc and returns the
// response.
func review(t *testing.T, h http.Handler, op admissionv1.Operation, doc string) *admissionv1.AdmissionResponse {
	t.Helper()
	raw, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	gvk, _ := parse(t, doc)
	req := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "42",
			Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
			Resource:  metav1.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: strings.ToLower(gvk.Kind) + "s"},
			Operation: op,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	body, _ := json.Marshal(req)
	rec := httptest.NewRecorder()
	hr := httptest.NewRequest(http.MethodPost, "/validate", bytes.NewReader(body))
	hr.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, hr)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != "42" || out.APIVersion != "admission.k8s.io/v1" {
		t.Fatalf("bad review response: %s", rec.Body)
	}
	return out.Response
}

func TestHandler(t *testing.T) {
	h, reg := newTestHandler(t)
	bad := obj("networking.istio.io/v1", "VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 40\n")
	good := obj("networking.istio.io/v1beta1", "DestinationRule", "  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n")

	resp := review(t, h, admissionv1.Create, bad)
	if resp.Allowed || resp.Result == nil ||
		resp.Result.Message != "configuration is invalid: spec.http[0].route[1].weight: weights sum to 90, must be 100" {
		t.Errorf("invalid create: got %+v", resp.Result)
	}
	if resp := review(t, h, admissionv1.Update, bad); resp.Allowed {
		t.Error("invalid update allowed")
	}
	if resp := review(t, h, admissionv1.Delete, bad); !resp.Allowed {
		t.Error("delete refused")
	}
	if resp := review(t, h, admissionv1.Create, good); !resp.Allowed || len(resp.Warnings) > 0 {
		t.Errorf("valid create refused or warned: %+v %v", resp.Result, resp.Warnings)
	}
	deprecated := obj("networking.istio.io/v1", "DestinationRule", "  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutiveErrors: 5}\n")
	if resp := review(t, h, admissionv1.Create, deprecated); !resp.Allowed ||
		strings.Join(resp.Warnings, ",") != "spec.trafficPolicy.outlierDetection.consecutiveErrors: consecutiveErrors is deprecated" {
		t.Errorf("deprecated field: allowed %v, warnings %v", resp.Allowed, resp.Warnings)
	}
	// Kinds outside the webhook's rules are not refused.
	if resp := review(t, h, admissionv1.Create, obj("networking.istio.io/v1alpha3", "EnvoyFilter", "  foo: bar\n")); !resp.Allowed {
		t.Error("EnvoyFilter refused")
	}

	if got := counterValue(t, reg, "galley_validation_failed", "virtualservices", "v1"); got != 2 {
		t.Errorf("galley_validation_failed for virtualservices: %v, want 2", got)
	}
	if got := counterValue(t, reg, "galley_validation_passed", "destinationrules", "v1beta1"); got != 1 {
		t.Errorf("galley_validation_passed for destinationrules v1beta1: %v, want 1", got)
	}
}

// counterValue returns the value of a counter by resource and version.
func counterValue(t *testing.T, reg *prometheus.Registry, name, resource, version string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["resource"] == resource && labels["version"] == version {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{resource=%q,version=%q}", name, resource, version)
	return 0
}

func TestHandlerBadRequests(t *testing.T) {
	h, reg := newTestHandler(t)
	for _, c := range []struct {
		name, method, contentType, body string
		want                            int
	}{
		{"get", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"yaml", http.MethodPost, "application/yaml", "{}", http.StatusUnsupportedMediaType},
		{"not json", http.MethodPost, "application/json", "nope", http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(c.method, "/validate", strings.NewReader(c.body))
		r.Header.Set("Content-Type", c.contentType)
		h.ServeHTTP(rec, r)
		if rec.Code != c.want {
			t.Errorf("%s: status %d, want %d", c.name, rec.Code, c.want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == "galley_validation_http_error" {
			n = len(mf.GetMetric())
		}
	}
	if n != 3 {
		t.Errorf("galley_validation_http_error series: %d, want 3 (405, 415, 400)", n)
	}
	if _, err := NewHandler(slog.Default(), reg); err == nil {
		t.Error("registering twice on one registry: want an error")
	}
}
