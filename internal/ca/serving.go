package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServingCertTTL is how long the control plane's own serving certificate
// lives before it is issued again.
const ServingCertTTL = 24 * time.Hour

// IssueServingCert issues a TLS server certificate for the control plane
// itself (xDS, CSR and webhook ports) from the root: a fresh ECDSA P-256
// key, the given DNS and IP SANs, valid for ttl (never past the CA's own
// expiry). The returned certificate carries the chain up to the root.
func (r *Root) IssueServingCert(dnsNames []string, ips []net.IP, ttl time.Duration, now time.Time) (*tls.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, errors.New("a serving certificate needs at least one DNS or IP SAN")
	}
	if ttl <= 0 {
		ttl = ServingCertTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(r.Cert.NotAfter) {
		notAfter = r.Cert.NotAfter
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Cert, key.Public(), r.Key)
	if err != nil {
		return nil, fmt.Errorf("signing the serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	out := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	last := der
	for _, c := range append([]*x509.Certificate{r.Cert}, r.Intermediates...) {
		out.Certificate = append(out.Certificate, c.Raw)
		last = c.Raw
	}
	if !r.RootCert.Equal(r.Cert) && string(last) != string(r.RootCert.Raw) {
		out.Certificate = append(out.Certificate, r.RootCert.Raw)
	}
	return out, nil
}

// RootPool returns a pool holding only the root of trust: what the control
// plane verifies client certificates against.
func (r *Root) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(r.RootCert)
	return p
}

// LoadRootFromDir reads a plug-in CA mounted as files (Istio's
// /etc/cacerts: ca-cert.pem, ca-key.pem, optional cert-chain.pem and
// root-cert.pem). It returns (nil, nil) when dir has no ca-cert.pem, so the
// caller falls back to LoadOrCreateRoot.
func LoadRootFromDir(dir string, now time.Time) (*Root, error) {
	caCert, err := os.ReadFile(filepath.Join(dir, CACertKey))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	caKey, err := os.ReadFile(filepath.Join(dir, CAKeyKey))
	if err != nil {
		return nil, err
	}
	optional := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	chain, err := optional(CertChainKey)
	if err != nil {
		return nil, err
	}
	rootCert, err := optional(RootCertKey)
	if err != nil {
		return nil, err
	}
	r, err := ParseRoot(caCert, caKey, chain, rootCert, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	r.Source = dir
	return r, nil
}
