package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/internal/proxy/certs"
	"github.com/mizzen-mesh/mizzen/internal/proxy/certs/certstest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newManager(t *testing.T, c *certstest.CA, tokenFile string) *certs.Manager {
	t.Helper()
	m, err := certs.New(certs.Options{
		CAAddress: c.Addr, RootCertFile: c.RootFile, TokenFile: tokenFile,
		Namespace: "shop", ServiceAccount: "cart", TrustDomain: "cluster.local",
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func run(t *testing.T, m *certs.Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitReady(t *testing.T, m *certs.Manager) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("no certificate obtained")
	}
}

func TestObtainCertificate(t *testing.T) {
	c := certstest.Start(t, 0)
	m := newManager(t, c, c.TokenFile(t, "shop", "cart"))
	if _, err := m.WorkloadCertificate(); err == nil {
		t.Fatal("a certificate before any request")
	}
	run(t, m)
	waitReady(t, m)
	cert, err := m.WorkloadCertificate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("identity %v", leaf.URIs)
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("key %T, want ECDSA P-256", cert.PrivateKey)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.RootCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the certificate does not verify with RootCAs: %v", err)
	}
	if !m.Expiry().Equal(leaf.NotAfter) || !m.HasValidCertificate() {
		t.Fatalf("expiry %v, leaf %v", m.Expiry(), leaf.NotAfter)
	}
	// Renewal is planned between half and two thirds of the life.
	life := time.Until(leaf.NotAfter)
	if ra := time.Until(m.RenewAt()); ra < life*2/5 || ra > life*7/10 {
		t.Fatalf("renewal in %v for a certificate living %v", ra, life)
	}
}

func TestRotation(t *testing.T) {
	c := certstest.Start(t, 3*time.Second) // the CA caps lifetimes at 3s
	m := newManager(t, c, c.TokenFile(t, "shop", "cart"))
	run(t, m)
	waitReady(t, m)
	first, _ := m.WorkloadCertificate()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur, _ := m.WorkloadCertificate()
		if cur.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
			if cur.Leaf.NotAfter.Before(first.Leaf.NotAfter) {
				t.Fatal("the renewed certificate expires earlier")
			}
			if cur.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
				t.Fatal("the key was not rotated")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !m.HasValidCertificate() {
		t.Fatal("no valid certificate after renewal")
	}
}

func TestRetryUntilAccepted(t *testing.T) {
	c := certstest.Start(t, 0)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("not-a-known-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, c, tokenFile)
	err := m.Refresh(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("refresh with a bad token: %v", err)
	}
	run(t, m)
	// The token is rotated (as the kubelet does): the retry picks it up.
	good, err := os.ReadFile(c.TokenFile(t, "shop", "cart"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	waitReady(t, m)
}

func TestRefusesOtherIdentity(t *testing.T) {
	c := certstest.Start(t, 0)
	// The token is another ServiceAccount's: the CA refuses the CSR.
	m := newManager(t, c, c.TokenFile(t, "shop", "payments"))
	err := m.Refresh(context.Background())
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("refresh for another identity: %v", err)
	}
}

func TestVerifiesTheCA(t *testing.T) {
	c := certstest.Start(t, 0)
	other := certstest.Start(t, 0)
	m, err := certs.New(certs.Options{
		CAAddress: c.Addr, RootCertFile: other.RootFile, TokenFile: c.TokenFile(t, "shop", "cart"),
		Namespace: "shop", ServiceAccount: "cart", Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a CA not signed by the mesh root was trusted: %v", err)
	}
}

func TestKeepsCertificateWhileCAIsDown(t *testing.T) {
	c := certstest.Start(t, 0)
	m := newManager(t, c, c.TokenFile(t, "shop", "cart"))
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, _ := m.WorkloadCertificate()
	c.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.Refresh(ctx); err == nil {
		t.Fatal("refresh succeeded with the CA down")
	}
	if cur, err := m.WorkloadCertificate(); err != nil || cur != first {
		t.Fatal("the certificate was dropped when the CA was down")
	}
	c.Restart(t)
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatalf("refresh after the CA came back: %v", err)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts certs.Options
		want string
	}{
		{"no address", certs.Options{Namespace: "a", ServiceAccount: "b"}, "no CA address"},
		{"no identity", certs.Options{CAAddress: "x:1"}, "namespace and service account"},
		{"bad address", certs.Options{CAAddress: "nohostport", Namespace: "a", ServiceAccount: "b"}, "CA address"},
	} {
		if _, err := certs.New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if got := certs.SPIFFEID("td", "ns", "sa"); got != (ca.Identity{Namespace: "ns", ServiceAccount: "sa"}).SPIFFEID("td") {
		t.Errorf("SPIFFE ID %s differs from the CA's", got)
	}
}
