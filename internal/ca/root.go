// Package ca is the Mizzen mesh's certificate authority: it keeps the
// mesh's root of trust in a Secret, issues SPIFFE workload certificates
// to callers authenticated by their ServiceAccount token over Istio's CSR
// protocol (istio.io/api/security/v1alpha1), and publishes the root as
// ConfigMap istio-ca-root-cert in every namespace.
package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Secret names and keys, the same as Istio's so that users' plug-in CA
// Secrets and tooling carry over.
const (
	// PluginSecret holds a user-provided CA (Istio's "plug-in CA").
	PluginSecret = "cacerts"
	// SelfSignedSecret holds the self-signed root Mizzen creates.
	SelfSignedSecret = "istio-ca-secret"

	CACertKey    = "ca-cert.pem"
	CAKeyKey     = "ca-key.pem"
	RootCertKey  = "root-cert.pem"
	CertChainKey = "cert-chain.pem"

	// RootValidity is how long a self-signed root lives.
	RootValidity = 10 * 365 * 24 * time.Hour
	// RootOrganization is the subject organization of a self-signed root.
	RootOrganization = "cluster.local"
)

// Root is the CA that signs workload certificates: the signing
// certificate and key, the certificates between it and the root, and the
// root itself (the same as the signing certificate for a self-signed CA).
type Root struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Intermediates are the certificates after Cert up to, not including,
	// the root, in order.
	Intermediates []*x509.Certificate
	RootCert      *x509.Certificate
	// Source names the Secret it was read from, namespace/name.
	Source string
}

// RootPEM returns the root certificate, PEM: what workloads trust.
func (r *Root) RootPEM() []byte { return encodeCert(r.RootCert) }

// chain returns the PEM certificates that follow a leaf: the signing
// certificate, the intermediates, and the root last (once).
func (r *Root) chain() []string {
	var out []string
	add := func(c *x509.Certificate) {
		p := string(encodeCert(c))
		if len(out) > 0 && out[len(out)-1] == p {
			return
		}
		out = append(out, p)
	}
	add(r.Cert)
	for _, c := range r.Intermediates {
		add(c)
	}
	add(r.RootCert)
	return out
}

// NewSelfSignedRoot creates a self-signed ECDSA P-256 root valid for
// RootValidity from now, and returns it as PEM certificate and key.
func NewSelfSignedRoot(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{RootOrganization}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// ParseRoot validates and parses a CA: caCert and caKey are the signing
// certificate and its key; certChain (optional) is the chain from caCert
// towards the root, as Istio's cert-chain.pem; rootCert (optional, the
// signing certificate itself when empty) is the root of trust. It checks
// that the key matches the certificate, that the certificate is a CA that
// may sign certificates, that every certificate is within its validity at
// now, and that the signing certificate chains to the root.
func ParseRoot(caCert, caKey, certChain, rootCert []byte, now time.Time) (*Root, error) {
	certs, err := parseCerts(caCert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertKey, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", CACertKey)
	}
	r := &Root{Cert: certs[0]}
	if r.Key, err = parseKey(caKey); err != nil {
		return nil, fmt.Errorf("%s: %w", CAKeyKey, err)
	}
	if !publicKeysEqual(r.Key.Public(), r.Cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match the certificate in %s", CAKeyKey, CACertKey)
	}
	if !r.Cert.BasicConstraintsValid || !r.Cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (basic constraints CA:false)", CACertKey)
	}
	if r.Cert.KeyUsage != 0 && r.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s may not sign certificates (no keyCertSign usage)", CACertKey)
	}
	if len(rootCert) > 0 {
		roots, err := parseCerts(rootCert)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", RootCertKey, err)
		}
		if len(roots) == 0 {
			return nil, fmt.Errorf("%s: no certificate", RootCertKey)
		}
		r.RootCert = roots[0]
	} else {
		r.RootCert = r.Cert
	}
	chain, err := parseCerts(certChain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CertChainKey, err)
	}
	for _, c := range chain {
		if c.Equal(r.Cert) || c.Equal(r.RootCert) {
			continue
		}
		r.Intermediates = append(r.Intermediates, c)
	}
	for _, c := range append(append([]*x509.Certificate{r.Cert}, r.Intermediates...), r.RootCert) {
		if now.After(c.NotAfter) {
			return nil, fmt.Errorf("CA certificate %q expired at %s", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
		}
		if now.Before(c.NotBefore) {
			return nil, fmt.Errorf("CA certificate %q is not valid before %s", c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(r.RootCert)
	inter := x509.NewCertPool()
	for _, c := range r.Intermediates {
		inter.AddCert(c)
	}
	if _, err := r.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%s does not chain to the root: %w", CACertKey, err)
	}
	return r, nil
}

// LoadOrCreateRoot returns the mesh's CA: the plug-in CA from Secret
// cacerts in namespace when it exists, else the self-signed root from
// Secret istio-ca-secret, which it creates when absent. Creation is
// create-if-absent, so replicas racing end up using the one root that won.
func LoadOrCreateRoot(ctx context.Context, cs kubernetes.Interface, namespace string) (*Root, error) {
	return loadOrCreateRoot(ctx, cs, namespace, time.Now())
}

func loadOrCreateRoot(ctx context.Context, cs kubernetes.Interface, namespace string, now time.Time) (*Root, error) {
	secrets := cs.CoreV1().Secrets(namespace)
	plug, err := secrets.Get(ctx, PluginSecret, metav1.GetOptions{})
	switch {
	case err == nil:
		r, err := ParseRoot(plug.Data[CACertKey], plug.Data[CAKeyKey], plug.Data[CertChainKey], plug.Data[RootCertKey], now)
		if err != nil {
			return nil, fmt.Errorf("Secret %s/%s: %w", namespace, PluginSecret, err)
		}
		r.Source = namespace + "/" + PluginSecret
		return r, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, PluginSecret, err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		sec, err := secrets.Get(ctx, SelfSignedSecret, metav1.GetOptions{})
		if err == nil {
			r, err := ParseRoot(sec.Data[CACertKey], sec.Data[CAKeyKey], nil, nil, now)
			if err != nil {
				return nil, fmt.Errorf("Secret %s/%s: %w", namespace, SelfSignedSecret, err)
			}
			r.Source = namespace + "/" + SelfSignedSecret
			return r, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, SelfSignedSecret, err)
		}
		certPEM, keyPEM, err := NewSelfSignedRoot(now)
		if err != nil {
			return nil, fmt.Errorf("creating a root: %w", err)
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: SelfSignedSecret, Namespace: namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "mizzen"}},
			Type: "istio.io/ca-root",
			Data: map[string][]byte{CACertKey: certPEM, CAKeyKey: keyPEM},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating Secret %s/%s: %w", namespace, SelfSignedSecret, err)
		}
		// Created, or another replica won: read back what is stored.
	}
	return nil, fmt.Errorf("Secret %s/%s: created but not readable", namespace, SelfSignedSecret)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// parseCerts parses every CERTIFICATE block of PEM data.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("not PEM data")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		rest = bytes.TrimSpace(rest)
	}
	return out, nil
}

// parseKey parses a PEM private key: PKCS#8, PKCS#1 RSA or SEC 1 EC.
func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unparseable private key (want PKCS#8, PKCS#1 or SEC 1)")
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}
