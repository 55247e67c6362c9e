package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/internal/inject"
)

// eventually retries check until it returns "" or the time is up.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// webhookClient trusts the CA in the injector's Secret, as the API server
// trusts the caBundle.
func webhookClient(t *testing.T, i *injector) *http.Client {
	t.Helper()
	sec := &corev1.Secret{}
	if err := k.Get(t.Context(), client.ObjectKey{Namespace: meshNamespace, Name: i.secretName}, sec); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data["ca.crt"]) {
		t.Fatal("the Secret's ca.crt holds no certificate")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Re-invoking the webhook on a pod that already has the sidecar (as a
// reinvocation or a second injector would) changes nothing, and a pod
// created with the sidecar already in it is stored unchanged.
func TestIdempotent(t *testing.T) {
	ns := namespace(t, injectionEnabled)
	injected := mustCreate(t, appPod(ns))
	assertInjected(t, injected, "default")

	raw, err := json.Marshal(injected)
	if err != nil {
		t.Fatal(err)
	}
	review, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "0b8e5a3c-1111-4000-8000-000000000002", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Namespace: ns, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	})
	resp, err := webhookClient(t, defaultI).Post(defaultI.webhookURL, "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil {
		t.Fatalf("response %s: %v", body, err)
	}
	if !out.Response.Allowed || len(out.Response.Patch) != 0 {
		t.Fatalf("re-invoking on an injected pod gave allowed=%v patch=%s", out.Response.Allowed, out.Response.Patch)
	}

	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "copy-", Namespace: ns, Labels: injected.Labels, Annotations: injected.Annotations,
	}, Spec: *injected.Spec.DeepCopy()}
	again.Spec.NodeName = ""
	stored := mustCreate(t, again)
	if names(stored.Spec.InitContainers)[1] != "istio-proxy" || len(stored.Spec.InitContainers) != 2 ||
		len(stored.Spec.Containers) != 1 || len(stored.Spec.Volumes) != len(injected.Spec.Volumes) {
		t.Fatalf("an already injected pod was changed: init %v, containers %v, %d volumes (had %d)",
			names(stored.Spec.InitContainers), names(stored.Spec.Containers), len(stored.Spec.Volumes), len(injected.Spec.Volumes))
	}
}

// Editing the ConfigMap's files (as the kubelet does when the operator
// updates the ConfigMap) changes the next injections without a restart.
func TestConfigChangePickedUp(t *testing.T) {
	path := filepath.Join(defaultI.configDir, inject.ValuesFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := json.Unmarshal(orig, &values); err != nil {
		t.Fatal(err)
	}
	values["global"].(map[string]any)["tag"] = "0.2.0"
	values["sidecar"].(map[string]any)["nativeSidecar"] = false
	changed, _ := json.Marshal(values)
	writeAtomically(t, path, changed)
	t.Cleanup(func() {
		writeAtomically(t, path, orig)
		// Wait until the original is back, so later tests see it.
		ns := namespace(t, injectionEnabled)
		eventually(t, "restoring the config", func() string {
			p := mustCreate(t, appPod(ns))
			if proxy, native := proxyOf(p); !native || proxy.Image != "ghcr.io/mizzen-mesh/mizzen:0.1.0" {
				return "old config still in use"
			}
			return ""
		})
	})

	ns := namespace(t, injectionEnabled)
	eventually(t, "the new values reaching new pods", func() string {
		pod := mustCreate(t, appPod(ns))
		proxy, native := proxyOf(pod)
		if proxy == nil {
			return "not injected"
		}
		if native || proxy.Image != "ghcr.io/mizzen-mesh/mizzen:0.2.0" {
			return "proxy image " + proxy.Image + ", still native"
		}
		return ""
	})
}

// writeAtomically replaces a file the way the kubelet updates a mounted
// ConfigMap: the new content appears at once.
func writeAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The serving certificate lives in a kubernetes.io/tls Secret, its CA is
// in every webhook's caBundle, and a caBundle lost (e.g. the configuration
// re-applied by someone else) is written back.
func TestServingCertificate(t *testing.T) {
	sec := &corev1.Secret{}
	if err := k.Get(t.Context(), client.ObjectKey{Namespace: meshNamespace, Name: defaultI.secretName}, sec); err != nil {
		t.Fatal(err)
	}
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.crt"]) == 0 || len(sec.Data["ca.crt"]) == 0 {
		t.Fatalf("Secret %s: type %s, keys %d", sec.Name, sec.Type, len(sec.Data))
	}
	block, _ := pemDecode(sec.Data["tls.crt"])
	cert, err := x509.ParseCertificate(block)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("istio-sidecar-injector.istio-system.svc"); err != nil {
		t.Errorf("serving certificate: %v", err)
	}

	// Drop every caBundle; the injector writes them back.
	mwc := &unstructured.Unstructured{}
	mwc.SetAPIVersion("admissionregistration.k8s.io/v1")
	mwc.SetKind("MutatingWebhookConfiguration")
	if err := k.Get(t.Context(), client.ObjectKey{Name: defaultI.mwcName}, mwc); err != nil {
		t.Fatal(err)
	}
	webhooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
	var ops []string
	for i := range webhooks {
		ops = append(ops, fmt.Sprintf(`{"op":"remove","path":"/webhooks/%d/clientConfig/caBundle"}`, i))
	}
	patch := client.RawPatch(types.JSONPatchType, []byte("["+strings.Join(ops, ",")+"]"))
	if err := k.Patch(t.Context(), mwc, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the caBundle written back", func() string { return defaultI.readyProblem(context.Background()) })
	assertInjected(t, mustCreate(t, appPod(namespace(t, injectionEnabled))), "default")
}

// /ready answers 200 and /metrics counts injections, denials and latency.
func TestMetricsAndReady(t *testing.T) {
	ns := namespace(t, injectionEnabled)
	mustCreate(t, appPod(ns))
	bad := appPod(ns)
	bad.Annotations = map[string]string{"sidecar.istio.io/proxyMemory": "lots"}
	if _, err := create(t, bad); err == nil {
		t.Fatal("a malformed annotation was accepted")
	}
	resp, err := http.Get(defaultI.monitorURL + "/ready")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(defaultI.monitorURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`sidecar_injection_requests_total{result="injected"}`,
		`sidecar_injection_denials_total{annotation="sidecar.istio.io/proxyMemory"} 1`,
		`sidecar_injection_duration_seconds_count`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, `sidecar_injection_requests_total{result="injected"} 0`) {
		t.Error("no injection counted")
	}
}
