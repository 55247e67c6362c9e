// Package certs obtains and rotates the proxy's workload certificate: it
// generates an ECDSA P-256 key and a CSR for the SPIFFE identity
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, sends it to
// the mesh CA (Istio's IstioCertificateService over TLS, the server
// verified with the mesh root, the projected ServiceAccount token as
// "authorization: Bearer"), keeps the signed certificate in memory and
// renews it between half and two thirds of its life, retrying failures with
// jittered exponential backoff. Manager implements config.Secrets: the SDS
// secrets "default" and "ROOTCA" of docs/xds.md.
package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// Defaults of Options.
const (
	DefaultRootCertFile = "/var/run/secrets/istio/root-cert.pem"
	DefaultTokenFile    = "/var/run/secrets/tokens/istio-token"
	DefaultTTL          = 24 * time.Hour
)

// Options configure a Manager.
type Options struct {
	// CAAddress is host:port of the CA (CA_ADDRESS).
	CAAddress string
	// ServerName verifies the CA's certificate; default: CAAddress's host.
	ServerName string
	// RootCertFile holds the mesh root(s), PEM; re-read at every request.
	RootCertFile string
	// TokenFile holds the ServiceAccount token; re-read at every request.
	TokenFile string
	// TrustDomain, Namespace, ServiceAccount make the SPIFFE identity.
	TrustDomain, Namespace, ServiceAccount string
	// TTL is the validity requested (the CA may shorten it).
	TTL time.Duration
	// Retry bounds the backoff after a failed request: it starts at
	// RetryMin (default 1s) and doubles up to RetryMax (default 30s).
	RetryMin, RetryMax time.Duration
	Log                *slog.Logger
}

// Manager keeps the workload certificate. Run it; read it any time.
type Manager struct {
	opts    Options
	spiffe  *url.URL
	log     *slog.Logger
	expiry  prometheus.Gauge
	renewal *prometheus.CounterVec

	mu      sync.RWMutex
	cert    *tls.Certificate
	roots   *x509.CertPool
	ready   chan struct{}
	renewAt time.Time
	issued  time.Time
}

var _ config.Secrets = (*Manager)(nil)

// New checks opts and returns a Manager with no certificate yet.
func New(opts Options) (*Manager, error) {
	if opts.CAAddress == "" {
		return nil, errors.New("no CA address")
	}
	if opts.Namespace == "" || opts.ServiceAccount == "" {
		return nil, errors.New("namespace and service account are required for the workload identity")
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.RootCertFile == "" {
		opts.RootCertFile = DefaultRootCertFile
	}
	if opts.TokenFile == "" {
		opts.TokenFile = DefaultTokenFile
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 30 * time.Second
	}
	if opts.ServerName == "" {
		host, _, err := net.SplitHostPort(opts.CAAddress)
		if err != nil {
			return nil, fmt.Errorf("CA address %q: %w", opts.CAAddress, err)
		}
		opts.ServerName = host
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	id, err := url.Parse(SPIFFEID(opts.TrustDomain, opts.Namespace, opts.ServiceAccount))
	if err != nil {
		return nil, err
	}
	return &Manager{
		opts: opts, spiffe: id, log: opts.Log, ready: make(chan struct{}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mizzen_proxy_cert_expiry_timestamp_seconds",
			Help: "When the proxy's workload certificate expires (Unix seconds).",
		}),
		renewal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mizzen_proxy_cert_requests_total",
			Help: "Workload certificate requests to the CA, by result.",
		}, []string{"result"}),
	}, nil
}

// SPIFFEID is the identity of a ServiceAccount in a trust domain.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// Collectors returns the manager's metrics, to register on the proxy's
// registry.
func (m *Manager) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.expiry, m.renewal}
}

// WorkloadCertificate implements config.Secrets.
func (m *Manager) WorkloadCertificate() (*tls.Certificate, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cert == nil {
		return nil, errors.New("no workload certificate yet")
	}
	return m.cert, nil
}

// RootCAs implements config.Secrets: the roots from the root file and the
// root of the chain the CA returned.
func (m *Manager) RootCAs() *x509.CertPool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.roots == nil {
		if pool, err := m.readRoots(); err == nil {
			return pool
		}
		return x509.NewCertPool()
	}
	return m.roots
}

// Expiry returns when the current certificate expires (zero: none yet).
func (m *Manager) Expiry() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cert == nil {
		return time.Time{}
	}
	return m.cert.Leaf.NotAfter
}

// RenewAt returns when the current certificate will be renewed.
func (m *Manager) RenewAt() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.renewAt
}

// Ready is closed once the first certificate was obtained.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// HasValidCertificate reports whether a certificate is held and not expired.
func (m *Manager) HasValidCertificate() bool {
	exp := m.Expiry()
	return !exp.IsZero() && time.Now().Before(exp)
}

// Run obtains the certificate and renews it until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	backoff := m.opts.RetryMin
	for {
		var wait time.Duration
		if err := m.Refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = jitter(backoff)
			m.log.Warn("workload certificate request failed", "err", err, "retryIn", wait)
			backoff = min(2*backoff, m.opts.RetryMax)
			// Never wait past the expiry of a certificate still held.
			if exp := m.Expiry(); !exp.IsZero() {
				if left := time.Until(exp) / 2; left > 0 && left < wait {
					wait = left
				}
			}
		} else {
			backoff = m.opts.RetryMin
			wait = time.Until(m.RenewAt())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// jitter returns d ±20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((mathrand.Float64()*0.4-0.2)*float64(d))
}

// Refresh requests a new certificate now and installs it.
func (m *Manager) Refresh(ctx context.Context) error {
	cert, roots, err := m.request(ctx)
	if err != nil {
		m.renewal.WithLabelValues("failure").Inc()
		return err
	}
	m.renewal.WithLabelValues("success").Inc()
	now := time.Now()
	life := cert.Leaf.NotAfter.Sub(now)
	// Renew between half and two thirds of the remaining life.
	renewAt := now.Add(life/2 + time.Duration(mathrand.Float64()*float64(life)/6))
	m.mu.Lock()
	m.cert, m.roots, m.renewAt, m.issued = cert, roots, renewAt, now
	m.mu.Unlock()
	m.expiry.Set(float64(cert.Leaf.NotAfter.Unix()))
	select {
	case <-m.ready:
	default:
		close(m.ready)
	}
	m.log.Info("workload certificate issued", "identity", m.spiffe.String(),
		"expires", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "renewAt", renewAt.UTC().Format(time.RFC3339))
	return nil
}

func (m *Manager) readRoots() (*x509.CertPool, error) {
	data, err := os.ReadFile(m.opts.RootCertFile)
	if err != nil {
		return nil, fmt.Errorf("reading the mesh root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", m.opts.RootCertFile)
	}
	return pool, nil
}

// request makes a key and CSR, asks the CA and checks the answer.
func (m *Manager) request(ctx context.Context) (*tls.Certificate, *x509.CertPool, error) {
	roots, err := m.readRoots()
	if err != nil {
		return nil, nil, err
	}
	token, err := os.ReadFile(m.opts.TokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{m.spiffe}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CSR: %w", err)
	}
	conn, err := grpc.NewClient(m.opts.CAAddress, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: m.opts.ServerName, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the CA: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValidityDuration: int64(m.opts.TTL / time.Second),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("CA %s: %w", m.opts.CAAddress, err)
	}
	return m.verify(resp.GetCertChain(), key, roots)
}

// verify parses the chain (leaf first, root last), checks that the leaf is
// for our key and identity and chains to a mesh root.
func (m *Manager) verify(chain []string, key *ecdsa.PrivateKey, roots *x509.CertPool) (*tls.Certificate, *x509.CertPool, error) {
	var certs []*x509.Certificate
	for _, p := range chain {
		rest := []byte(p)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("CA returned a bad certificate: %w", err)
			}
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("CA returned no certificate")
	}
	leaf := certs[0]
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, nil, errors.New("CA returned a certificate for another key")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != m.spiffe.String() {
		return nil, nil, fmt.Errorf("CA returned a certificate for %v, want %s", leaf.URIs, m.spiffe)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	// The mesh roots: the root file plus the chain's self-signed root.
	all := roots.Clone()
	if last := certs[len(certs)-1]; len(certs) > 1 && last.IsCA {
		all.AddCert(last)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, fmt.Errorf("CA returned a certificate that does not chain to the mesh root: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range certs {
		if c.IsCA && c.CheckSignatureFrom(c) == nil {
			continue // the root is not sent in handshakes
		}
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, all, nil
}
