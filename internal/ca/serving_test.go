package ca

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIssueServingCert(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, err := NewSelfSignedRoot(now)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ParseRoot(certPEM, keyPEM, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"istiod-canary.istio-system.svc", "istiod-canary.istio-system.svc.cluster.local"}
	c, err := root.IssueServingCert(names, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range append(names, "127.0.0.1") {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: root.RootPool(), CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "istiod.other.svc", Roots: root.RootPool(), CurrentTime: now}); err == nil {
		t.Error("verified for a name not in the SANs")
	}
	if got := c.Leaf.NotAfter.Sub(now); got > time.Hour {
		t.Errorf("validity %s, want at most 1h", got)
	}
	if _, err := root.IssueServingCert(nil, nil, 0, now); err == nil {
		t.Error("issued a certificate without SANs")
	}
}

func TestLoadRootFromDir(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	r, err := LoadRootFromDir(dir, now)
	if err != nil || r != nil {
		t.Fatalf("empty dir: got %v, %v; want nil, nil", r, err)
	}
	certPEM, keyPEM, err := NewSelfSignedRoot(now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CACertKey), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRootFromDir(dir, now); err == nil {
		t.Fatal("loaded a CA without its key")
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyKey), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err = LoadRootFromDir(dir, now); err != nil {
		t.Fatal(err)
	}
	if r.Source != dir || string(r.RootPEM()) != string(certPEM) {
		t.Errorf("source %q, root differs: %v", r.Source, string(r.RootPEM()) != string(certPEM))
	}
}
