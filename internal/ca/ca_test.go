package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func newRoot(t *testing.T) *Root {
	t.Helper()
	c, k, err := NewSelfSignedRoot(now)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRoot(c, k, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func makeCSR(t *testing.T, uris ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseChain(t *testing.T, chain []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range chain {
		cs, err := parseCerts([]byte(p))
		if err != nil || len(cs) != 1 {
			t.Fatalf("chain element %q: %v", p, err)
		}
		out = append(out, cs[0])
	}
	return out
}

func TestSelfSignedRoot(t *testing.T) {
	r := newRoot(t)
	if !r.Cert.IsCA || r.Cert.Subject.Organization[0] != "cluster.local" {
		t.Errorf("root: CA %v subject %v", r.Cert.IsCA, r.Cert.Subject)
	}
	if got := r.Cert.NotAfter.Sub(now); got < RootValidity-time.Hour {
		t.Errorf("root lives %s", got)
	}
	if _, ok := r.Key.(*ecdsa.PrivateKey); !ok {
		t.Errorf("key %T", r.Key)
	}
}

func TestSign(t *testing.T) {
	r := newRoot(t)
	s := &Signer{Root: r, MaxTTL: 48 * time.Hour}
	id := Identity{Namespace: "shop", ServiceAccount: "cart"}
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"default", 0, 24 * time.Hour},
		{"requested", 2 * time.Hour, 2 * time.Hour},
		{"bounded", 1000 * time.Hour, 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := s.Sign(makeCSR(t, "spiffe://cluster.local/ns/shop/sa/cart"), id, tc.ttl, now)
			if err != nil {
				t.Fatal(err)
			}
			certs := parseChain(t, chain)
			if len(certs) != 2 || !certs[1].Equal(r.RootCert) {
				t.Fatalf("chain of %d, last is root: %v", len(certs), len(certs) == 2 && certs[1].Equal(r.RootCert))
			}
			leaf := certs[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" {
				t.Errorf("URIs %v", leaf.URIs)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
				t.Errorf("unexpected SANs or CA: %v %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.IsCA)
			}
			if got := leaf.NotAfter.Sub(now); got != tc.want {
				t.Errorf("TTL %s, want %s", got, tc.want)
			}
			pool := x509.NewCertPool()
			pool.AddCert(r.RootCert)
			for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
					t.Errorf("verify for %v: %v", eku, err)
				}
			}
		})
	}
	// A CSR without SANs gets the caller's identity.
	chain, err := s.Sign(makeCSR(t), id, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if u := parseChain(t, chain)[0].URIs; len(u) != 1 || u[0].String() != id.SPIFFEID("cluster.local") {
		t.Errorf("URIs %v", u)
	}
	// The trust domain is configurable.
	chain, err = (&Signer{Root: r, TrustDomain: "example.org"}).Sign(makeCSR(t), id, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if u := parseChain(t, chain)[0].URIs[0].String(); u != "spiffe://example.org/ns/shop/sa/cart" {
		t.Errorf("URI %s", u)
	}
}

func TestSignRefuses(t *testing.T) {
	s := &Signer{Root: newRoot(t)}
	id := Identity{Namespace: "shop", ServiceAccount: "cart"}
	tampered := makeCSR(t)
	b, _ := pem.Decode(tampered)
	b.Bytes[len(b.Bytes)-3] ^= 0xff
	dnsKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dnsDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"evil.example"}}, dnsKey)
	for name, csr := range map[string][]byte{
		"garbage":        []byte("hello"),
		"not a CSR":      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
		"bad signature":  pem.EncodeToMemory(b),
		"other identity": makeCSR(t, "spiffe://cluster.local/ns/kube-system/sa/admin"),
		"extra identity": makeCSR(t, "spiffe://cluster.local/ns/shop/sa/cart", "spiffe://cluster.local/ns/shop/sa/db"),
		"DNS SAN":        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: dnsDER}),
	} {
		_, err := s.Sign(csr, id, 0, now)
		if _, ok := err.(*InvalidCSRError); !ok {
			t.Errorf("%s: got %v, want an InvalidCSRError", name, err)
		}
	}
}

// caCert makes a CA certificate signed by parent (self-signed when nil).
func caCert(t *testing.T, cn string, parent *x509.Certificate, parentKey any, notAfter time.Time, isCA bool) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: notAfter, BasicConstraintsValid: true, IsCA: isCA,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func keyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func TestParseRootPluginChain(t *testing.T) {
	root, rootKey := caCert(t, "root", nil, nil, now.Add(1000*time.Hour), true)
	inter, interKey := caCert(t, "intermediate", root, rootKey, now.Add(500*time.Hour), true)
	chainPEM := append(encodeCert(inter), encodeCert(root)...)
	r, err := ParseRoot(encodeCert(inter), keyPEM(interKey), chainPEM, encodeCert(root), now)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := (&Signer{Root: r}).Sign(makeCSR(t), Identity{"a", "b"}, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	certs := parseChain(t, chain)
	if len(certs) != 3 || !certs[1].Equal(inter) || !certs[2].Equal(root) {
		t.Fatalf("chain is not leaf, intermediate, root: %d certificates", len(certs))
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	ip := x509.NewCertPool()
	ip.AddCert(inter)
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: ip, CurrentTime: now}); err != nil {
		t.Error(err)
	}
	// A leaf never outlives its CA.
	chain, err = (&Signer{Root: r, MaxTTL: 10000 * time.Hour}).Sign(makeCSR(t), Identity{"a", "b"}, 9000*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if na := parseChain(t, chain)[0].NotAfter; na.After(inter.NotAfter) {
		t.Errorf("leaf expires %s after its CA %s", na, inter.NotAfter)
	}
}

func TestParseRootRefuses(t *testing.T) {
	good, goodKey := caCert(t, "good", nil, nil, now.Add(time.Hour), true)
	_, otherKey := caCert(t, "other", nil, nil, now.Add(time.Hour), true)
	expired, expiredKey := caCert(t, "expired", nil, nil, now.Add(-time.Minute), true)
	leaf, leafKey := caCert(t, "leaf", nil, nil, now.Add(time.Hour), false)
	unrelated, _ := caCert(t, "unrelated", nil, nil, now.Add(time.Hour), true)
	for _, tc := range []struct {
		name              string
		cert, key, root   []byte
		wantErrSubstrings string
	}{
		{"key mismatch", encodeCert(good), keyPEM(otherKey), nil, "does not match"},
		{"expired", encodeCert(expired), keyPEM(expiredKey), nil, "expired"},
		{"not a CA", encodeCert(leaf), keyPEM(leafKey), nil, "not a CA"},
		{"wrong root", encodeCert(good), keyPEM(goodKey), encodeCert(unrelated), "does not chain"},
		{"no cert", nil, keyPEM(goodKey), nil, "no certificate"},
		{"bad key", encodeCert(good), []byte("nope"), nil, "private key"},
	} {
		_, err := ParseRoot(tc.cert, tc.key, nil, tc.root, now)
		if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstrings) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.wantErrSubstrings)
		}
	}
}

func TestParseServiceAccountUser(t *testing.T) {
	id, err := parseServiceAccountUser("system:serviceaccount:shop:cart")
	if err != nil || id != (Identity{"shop", "cart"}) {
		t.Errorf("got %v %v", id, err)
	}
	for _, u := range []string{"admin", "system:serviceaccount:shop", "system:serviceaccount::cart", "system:serviceaccount:a:b:c", "system:node:x"} {
		if _, err := parseServiceAccountUser(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}
