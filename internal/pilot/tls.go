package pilot

import (
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/ca"
)

// servingCert keeps the control plane's own serving certificate, issued
// from the mesh root, and issues a new one once half its life passed.
type servingCert struct {
	root *ca.Root
	dns  []string
	ips  []net.IP
	ttl  time.Duration

	mu   sync.Mutex
	cert *tls.Certificate
}

// serviceNames are the DNS SANs of the control plane: the Service
// istiod{-rev} in its namespace, short and fully qualified, plus extra.
func serviceNames(namespace, revision, domainSuffix string, extra []string) (dns []string, ips []net.IP) {
	svc := "istiod"
	if revision != "" && revision != "default" {
		svc += "-" + revision
	}
	dns = []string{svc + "." + namespace + ".svc", svc + "." + namespace + ".svc." + domainSuffix}
	for _, e := range extra {
		if ip := net.ParseIP(e); ip != nil {
			ips = append(ips, ip)
		} else if e != "" {
			dns = append(dns, e)
		}
	}
	return dns, ips
}

func (s *servingCert) get(now time.Time) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert != nil {
		l := s.cert.Leaf
		if now.Before(l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)) {
			return s.cert, nil
		}
	}
	c, err := s.root.IssueServingCert(s.dns, s.ips, s.ttl, now)
	if err != nil {
		return nil, err
	}
	s.cert = c
	return c, nil
}

// serverTLS is the TLS configuration of the gRPC and webhook ports:
// the serving certificate, and client certificates verified against the
// mesh root when given (xDS requires one, the CSR service does not).
func (s *servingCert) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.get(time.Now())
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.root.RootPool(),
		NextProtos: []string{"h2"},
	}
}
