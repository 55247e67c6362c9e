package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/ca"
)

// serviceAccount creates a ServiceAccount and returns a token for it with
// the given audience, the way the kubelet projects one.
func serviceAccount(t *testing.T, ns, name, audience string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return token(t, ns, name, audience)
}

func token(t *testing.T, ns, name, audience string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// csr returns a PEM CSR for a new key, asking for the given URI SANs.
func csr(t *testing.T, uris ...string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// request calls the CA as Istio's agent does: the token in the
// authorization metadata, the CSR and the requested validity in seconds.
func request(token, csrPEM string, ttl time.Duration) (*pb.IstioCertificateResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return caClient.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csrPEM, ValidityDuration: int64(ttl / time.Second)})
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		t.Fatalf("not PEM: %q", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificateForServiceAccount(t *testing.T) {
	ns := createNamespace(t, "csr")
	tok := serviceAccount(t, ns, "cart", "istio-ca")
	want := "spiffe://cluster.local/ns/" + ns + "/sa/cart"
	for _, tc := range []struct {
		name      string
		uris      []string
		requested time.Duration
		ttl       time.Duration
	}{
		{"requested TTL, SAN in the CSR", []string{want}, 2 * time.Hour, 2 * time.Hour},
		{"default TTL, no SAN in the CSR", nil, 0, 24 * time.Hour},
		{"TTL over the maximum", []string{want}, 1000 * time.Hour, maxTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := request(tok, csr(t, tc.uris...), tc.requested)
			if err != nil {
				t.Fatal(err)
			}
			chain := resp.GetCertChain()
			if len(chain) != 2 {
				t.Fatalf("chain of %d certificates, want leaf and root", len(chain))
			}
			leaf, last := parseCert(t, chain[0]), parseCert(t, chain[1])
			if !last.Equal(root.RootCert) {
				t.Error("the chain does not end with the mesh root")
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
				t.Errorf("URI SANs %v, want only %s", leaf.URIs, want)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("other SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			// The published root is what workloads trust.
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(root.RootPEM()) {
				t.Fatal("root PEM")
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("does not chain to the root: %v", err)
			}
			ttl := leaf.NotAfter.Sub(start)
			if ttl < tc.ttl-time.Minute || ttl > tc.ttl+time.Minute {
				t.Errorf("TTL %s, want %s", ttl, tc.ttl)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	ns := createNamespace(t, "refused")
	good := serviceAccount(t, ns, "cart", "istio-ca")
	otherAudience := token(t, ns, "cart", "other")
	gone := serviceAccount(t, ns, "gone", "istio-ca")

	// The token of a deleted ServiceAccount is refused as well.
	if _, err := request(gone, csr(t), 0); err != nil {
		t.Fatalf("before the ServiceAccount is deleted: %v", err)
	}
	if err := cs.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The same token re-signed with its validity around now is accepted:
	// the expired one below is refused for its expiry alone.
	if _, err := request(resign(t, good, time.Now().Add(-time.Minute), time.Now().Add(time.Hour)), csr(t), 0); err != nil {
		t.Fatalf("re-signed valid token refused: %v", err)
	}

	before := csrCount(t, ca.ResultUnauthenticated)
	unauth := map[string]string{
		"no token":           "",
		"garbage token":      "not-a-token",
		"forged token":       forge(t, good),
		"wrong audience":     otherAudience,
		"deleted SA's token": gone,
		"expired token":      resign(t, good, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)),
	}
	for name, tok := range unauth {
		t.Run(name, func(t *testing.T) {
			var err error
			// The API server notices the deletion within moments.
			eventually(t, "refused", func() error {
				_, err = request(tok, csr(t), 0)
				if code := status.Code(err); code != codes.Unauthenticated {
					return fmt.Errorf("got %v (%v), want Unauthenticated", code, err)
				}
				return nil
			})
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "unauthenticated:") {
				t.Errorf("message %q", msg)
			}
			t.Log(status.Convert(err).Message())
		})
	}
	if got := csrCount(t, ca.ResultUnauthenticated) - before; got < float64(len(unauth)) {
		t.Errorf("unauthenticated counter grew by %v, want at least %d", got, len(unauth))
	}
	if _, err := request(otherAudience, csr(t), 0); !strings.Contains(status.Convert(err).Message(), "token") {
		t.Errorf("wrong-audience message: %v", err)
	}

	invalid := map[string]string{
		"another identity":   csr(t, "spiffe://cluster.local/ns/kube-system/sa/admin"),
		"another namespace":  csr(t, "spiffe://cluster.local/ns/other/sa/cart"),
		"unparseable CSR":    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
		"not PEM":            "hello",
		"another trust zone": csr(t, "spiffe://evil.example/ns/"+ns+"/sa/cart"),
	}
	for name, c := range invalid {
		t.Run(name, func(t *testing.T) {
			_, err := request(good, c, 0)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			t.Log(status.Convert(err).Message())
		})
	}
}

// forge re-signs a real token's header and claims with a key the API
// server does not know.
func forge(t *testing.T, real string) string {
	t.Helper()
	parts := strings.Split(real, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var hdr map[string]any
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatal(err)
	}
	hdr["alg"] = "RS256"
	h, _ := json.Marshal(hdr)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signed := base64.RawURLEncoding.EncodeToString(h) + "." + parts[1]
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// resign returns real valid from iat until exp, signed with the API
// server's own key: expired, it is a token the API server issued that has
// since expired (TokenRequest will not mint one shorter than 10 minutes).
func resign(t *testing.T, real string, iat, exp time.Time) string {
	t.Helper()
	if saSigningKey == "" {
		t.Fatal("the API server's token signing key is not available")
	}
	parts := strings.Split(real, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	claims["iat"] = iat.Unix()
	claims["nbf"] = iat.Unix()
	claims["exp"] = exp.Unix()
	c, _ := json.Marshal(claims)
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(c)

	pemBytes, err := os.ReadFile(saSigningKey)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("signing key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		if k, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			t.Fatalf("signing key: %v", err)
		}
	}
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch key := k.(type) {
	case *ecdsa.PrivateKey: // ES256: r || s, 32 bytes each
		r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case *rsa.PrivateKey: // RS256
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("signing key of type %T", k)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// csrCount reads mizzen_ca_csr_total{result} from the CA's registry.
func csrCount(t *testing.T, result string) float64 {
	t.Helper()
	mfs, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mizzen_ca_csr_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no mizzen_ca_csr_total{result=%q}", result)
	return 0
}
