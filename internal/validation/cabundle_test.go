package validation

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestKeepCABundleFake checks the loop against client-go's fake clientset;
// test/validation checks it against a real API server.
func TestKeepCABundleFake(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n")
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-validator-istio-system"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			{Name: "validation.istio.io"},
			{Name: "rev.validation.istio.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: ca}},
		},
	}
	cs := fake.NewClientset(vwc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- KeepCABundle(ctx, cs, vwc.Name, ca, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	waitCA := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, vwc.Name, metav1.GetOptions{})
			if err == nil && bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, ca) && bytes.Equal(got.Webhooks[1].ClientConfig.CABundle, ca) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: caBundle not written", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCA("at start")
	got, _ := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, vwc.Name, metav1.GetOptions{})
	got.Webhooks[1].ClientConfig.CABundle = nil
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCA("after removal")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepCABundle: %v", err)
	}
	// A configuration created after the loop started (the operator may
	// apply it after istiod is up) gets the caBundle too.
	later := vwc.DeepCopy()
	later.Name = "istio-validator-canary-istio-system"
	later.Webhooks[1].ClientConfig.CABundle = nil
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() {
		done <- KeepCABundle(ctx, cs, later.Name, ca, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, later, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vwc.Name = later.Name
	waitCA("created later")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepCABundle: %v", err)
	}

	if err := KeepCABundle(context.Background(), cs, vwc.Name, nil, slog.Default()); err == nil {
		t.Error("no CA: want an error")
	}
}
