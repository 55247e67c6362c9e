package inject

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func leaf(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemData)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSecretCertificateLifecycle(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	s := certSettings{
		hosts:    []string{"istio-sidecar-injector.istio-system.svc", "127.0.0.1"},
		validity: 30 * 24 * time.Hour, renewBefore: 10 * 24 * time.Hour, caValidity: 300 * 24 * time.Hour,
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first, err := ensureSecretCert(ctx, cs, "istio-system", "istio-sidecar-injector-tls", s, now)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := cs.CoreV1().Secrets("istio-system").Get(ctx, "istio-sidecar-injector-tls", metav1.GetOptions{})
	if err != nil || sec.Type != corev1.SecretTypeTLS {
		t.Fatalf("Secret %v, %v", sec, err)
	}
	c := leaf(t, first.cert)
	if c.VerifyHostname("istio-sidecar-injector.istio-system.svc") != nil || c.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("certificate hosts %v %v", c.DNSNames, c.IPAddresses)
	}
	if err := c.CheckSignatureFrom(leaf(t, first.caCert)); err != nil {
		t.Fatal(err)
	}

	// Still valid a week later: reused as is.
	again, err := ensureSecretCert(ctx, cs, "istio-system", "istio-sidecar-injector-tls", s, now.Add(7*24*time.Hour))
	if err != nil || string(again.cert) != string(first.cert) {
		t.Fatalf("a valid certificate was not reused (err %v)", err)
	}
	// Inside the renewal window: a new serving certificate from the same CA,
	// so the caBundle stays.
	renewed, err := ensureSecretCert(ctx, cs, "istio-system", "istio-sidecar-injector-tls", s, now.Add(25*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if string(renewed.cert) == string(first.cert) || string(renewed.caCert) != string(first.caCert) {
		t.Fatal("renewal must issue a new certificate from the same CA")
	}
	if leaf(t, renewed.cert).NotAfter.Before(now.Add(50 * 24 * time.Hour)) {
		t.Fatal("the renewed certificate does not live longer")
	}
	// Another host (e.g. the Service renamed): a new certificate.
	s.hosts = append(s.hosts, "other.istio-system.svc")
	moved, err := ensureSecretCert(ctx, cs, "istio-system", "istio-sidecar-injector-tls", s, now.Add(25*24*time.Hour))
	if err != nil || leaf(t, moved.cert).VerifyHostname("other.istio-system.svc") != nil {
		t.Fatalf("certificate not reissued for a new host: %v", err)
	}
	// A CA near its end: everything is regenerated.
	late := now.Add(295 * 24 * time.Hour)
	fresh, err := ensureSecretCert(ctx, cs, "istio-system", "istio-sidecar-injector-tls", s, late)
	if err != nil || string(fresh.caCert) == string(first.caCert) {
		t.Fatalf("an expiring CA was kept (err %v)", err)
	}
}

// With a certificate directory (cert-manager), the injector serves those
// files, reloads them when they change and writes their ca.crt into the
// webhook configuration, patching only caBundle.
func TestCertDirAndCABundle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := certSettings{hosts: []string{"injector.mesh.svc"}, validity: time.Hour, renewBefore: time.Minute, caValidity: 10 * time.Hour}
	write := func(b *certBundle) {
		for name, data := range map[string][]byte{"tls.crt": b.cert, "tls.key": b.key, "ca.crt": b.caCert} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	b1, err := renew(nil, s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write(b1)
	failPolicy := admissionregistrationv1.Fail
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "injector-mesh"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "namespace.sidecar-injector.istio.io", FailurePolicy: &failPolicy},
			{Name: "object.sidecar-injector.istio.io", FailurePolicy: &failPolicy},
		},
	}
	cs := fake.NewClientset(mwc)
	r := &runner{o: Options{CertDir: dir, WebhookConfig: "injector-mesh"}, cs: cs, handler: NewHandler(nil, nil)}
	if err := r.reloadCert(ctx); err != nil {
		t.Fatal(err)
	}
	if c := r.cert.Load(); c == nil || string(leafOf(t, c.Certificate[0]).Raw) != string(leaf(t, b1.cert).Raw) {
		t.Fatal("the directory's certificate is not served")
	}
	got, _ := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "injector-mesh", metav1.GetOptions{})
	for _, w := range got.Webhooks {
		if string(w.ClientConfig.CABundle) != string(b1.caCert) || w.FailurePolicy == nil || *w.FailurePolicy != failPolicy {
			t.Fatalf("webhook %s: caBundle not written or other fields changed", w.Name)
		}
	}

	// cert-manager renews: the new files are served without a restart.
	b2, err := renew(nil, s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write(b2)
	if err := r.reloadCert(ctx); err != nil {
		t.Fatal(err)
	}
	if string(leafOf(t, r.cert.Load().Certificate[0]).Raw) != string(leaf(t, b2.cert).Raw) {
		t.Fatal("the renewed certificate was not picked up")
	}
	got, _ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "injector-mesh", metav1.GetOptions{})
	if string(got.Webhooks[1].ClientConfig.CABundle) != string(b2.caCert) {
		t.Fatal("the new CA was not written into the caBundle")
	}
}

func leafOf(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
