package pilot

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"crypto"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCSR: pilot's CA, on its TLS port, signs a SPIFFE certificate for the
// ServiceAccount of a real token of audience istio-ca, and refuses others.
func TestCSR(t *testing.T) {
	ns := createNamespace(t, "csr-")
	cert, resp, err := requestCert(context.Background(), addrs.GRPC, token(t, ns, "app", "istio-ca"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/"+ns+"/sa/app" {
		t.Errorf("certificate URIs %v", leaf.URIs)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not chain to the mesh root: %v", err)
	}
	if n := len(resp.GetCertChain()); n < 2 {
		t.Errorf("chain of %d certificates, want leaf and root", n)
	}

	deleted := token(t, ns, "gone", "istio-ca")
	if err := cs.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"wrong audience":          token(t, ns, "app", "api"),
		"forged":                  forgedToken(t, ns, "app"),
		"deleted service account": deleted,
		"no token":                "",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := requestCert(context.Background(), addrs.GRPC, tok)
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("got %v, want Unauthenticated", err)
			}
		})
	}
}

// forgedToken is a well-formed ServiceAccount JWT signed by a key the API
// server does not know.
func forgedToken(t *testing.T, ns, sa string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now().Unix()
	signing := enc(map[string]string{"alg": "RS256", "kid": "forged"}) + "." + enc(map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local", "aud": []string{"istio-ca"},
		"sub": "system:serviceaccount:" + ns + ":" + sa, "iat": now, "nbf": now, "exp": now + 3600,
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa, "uid": "0"}},
	})
	h := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
