package pilot

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestWebhook: the validating webhook is served over TLS on the webhook
// port with a certificate from the mesh root, refusing a bad
// VirtualService with a message and allowing a good one.
func TestWebhook(t *testing.T) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootPool, ServerName: "istiod.istio-system.svc"}}}
	review := func(spec string) *admissionv1.AdmissionResponse {
		t.Helper()
		obj := `{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"r","namespace":"default"},"spec":` + spec + `}`
		body, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{UID: "1", Operation: admissionv1.Create, Namespace: "default", Name: "r",
				Kind:     metav1.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"},
				Resource: metav1.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"},
				Object:   runtime.RawExtension{Raw: []byte(obj)}}})
		resp, err := hc.Post("https://"+addrs.Webhook+"/validate", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
			t.Fatalf("decoding the review (status %d): %v", resp.StatusCode, err)
		}
		return out.Response
	}
	if r := review(`{"hosts":["web"],"http":[{"route":[{"destination":{"host":"web"}}]}]}`); !r.Allowed {
		t.Errorf("a valid VirtualService was refused: %v", r.Result)
	}
	r := review(`{"hosts":["web"],"http":[{"route":[{"destination":{"host":"web"},"weight":-5}]}]}`)
	if r.Allowed || r.Result == nil || !strings.Contains(r.Result.Message, "weight") {
		t.Errorf("an invalid VirtualService: allowed=%v result=%v", r.Allowed, r.Result)
	}
}
