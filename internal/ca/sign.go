package ca

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Defaults for workload certificates.
const (
	DefaultTrustDomain = "cluster.local"
	DefaultTTL         = 24 * time.Hour
	DefaultMaxTTL      = 90 * 24 * time.Hour
)

// Identity is an authenticated workload identity: a ServiceAccount.
type Identity struct {
	Namespace      string
	ServiceAccount string
}

// SPIFFEID returns the identity's SPIFFE ID in trustDomain.
func (id Identity) SPIFFEID(trustDomain string) string {
	return "spiffe://" + trustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// InvalidCSRError says that a certificate request was refused for what it
// holds (unparseable, bad signature, or asking for another identity).
type InvalidCSRError struct{ Reason string }

func (e *InvalidCSRError) Error() string { return "invalid certificate request: " + e.Reason }

// Signer issues workload certificates from a Root.
type Signer struct {
	Root        *Root
	TrustDomain string        // default DefaultTrustDomain
	DefaultTTL  time.Duration // default DefaultTTL
	MaxTTL      time.Duration // default DefaultMaxTTL
}

// Sign issues a certificate for id from a PEM CSR, valid for ttl (the
// default when ttl <= 0, at most MaxTTL, and never past the CA's own
// expiry). The certificate's only SAN is id's SPIFFE ID: the CSR's own
// SANs are not copied, and a CSR naming any other identity is refused.
// It returns the chain, PEM: leaf, signing CA, intermediates, root.
func (s *Signer) Sign(csrPEM []byte, id Identity, ttl time.Duration, now time.Time) ([]string, error) {
	if s.Root == nil {
		return nil, errors.New("no CA root loaded")
	}
	if id.Namespace == "" || id.ServiceAccount == "" {
		return nil, errors.New("empty identity")
	}
	td := s.TrustDomain
	if td == "" {
		td = DefaultTrustDomain
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
		return nil, &InvalidCSRError{"not a PEM CERTIFICATE REQUEST"}
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, &InvalidCSRError{err.Error()}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &InvalidCSRError{"bad signature: " + err.Error()}
	}
	want := id.SPIFFEID(td)
	for _, u := range csr.URIs {
		if u.String() != want {
			return nil, &InvalidCSRError{fmt.Sprintf("requests identity %q but the caller is %q", u, want)}
		}
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, &InvalidCSRError{fmt.Sprintf("requests DNS, IP or email SANs; only the caller's identity %q may be issued", want)}
	}
	if ttl <= 0 {
		ttl = s.DefaultTTL
		if ttl <= 0 {
			ttl = DefaultTTL
		}
	}
	maxTTL := s.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	if ttl > maxTTL {
		ttl = maxTTL
	}
	notBefore := now.Add(-time.Minute) // tolerate small clock skew
	notAfter := now.Add(ttl)
	if notAfter.After(s.Root.Cert.NotAfter) {
		notAfter = s.Root.Cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(want)
	if err != nil {
		return nil, fmt.Errorf("identity %q: %w", want, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.Root.Cert, csr.PublicKey, s.Root.Key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	leaf := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return append([]string{leaf}, s.Root.chain()...), nil
}
