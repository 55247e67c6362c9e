package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// tlsServer terminates TLS for one filter chain. Certificates named
// "default" and roots named "ROOTCA" are read from the proxy's own Secrets
// at each handshake, so rotation needs no restart.
type tlsServer struct {
	cfg *tls.Config
}

// Well-known SDS names of docs/xds.md.
const (
	secretDefault    = "default"
	secretRootCA     = "ROOTCA"
	credentialPrefix = "kubernetes://"
)

func (d *Dataplane) buildTLS(snap *config.Snapshot, ctx *tlsv3.DownstreamTlsContext) (*tlsServer, error) {
	common := ctx.GetCommonTlsContext()
	var getCert func() (*tls.Certificate, error)
	switch {
	case len(common.GetTlsCertificateSdsSecretConfigs()) > 0:
		name := common.GetTlsCertificateSdsSecretConfigs()[0].GetName()
		if name == secretDefault {
			if d.opts.Secrets == nil {
				return nil, fmt.Errorf("secret %q: the proxy has no workload certificate", name)
			}
			getCert = d.opts.Secrets.WorkloadCertificate
			break
		}
		s, ok := snap.Secrets[name]
		if !ok && strings.HasPrefix(name, credentialPrefix) {
			// A gateway credential that has not arrived yet: like
			// Envoy's warming listener, the chain refuses handshakes
			// until a snapshot brings it, rather than NACKing.
			d.log.Warn("gateway credential not received yet; its filter chain refuses connections", "secret", name)
			getCert = func() (*tls.Certificate, error) { return nil, fmt.Errorf("secret %q not received", name) }
			break
		}
		if !ok || s.GetTlsCertificate() == nil {
			return nil, fmt.Errorf("secret %q: no such key pair", name)
		}
		cert, err := keyPair(s.GetTlsCertificate())
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", name, err)
		}
		getCert = func() (*tls.Certificate, error) { return cert, nil }
	case len(common.GetTlsCertificates()) > 0:
		cert, err := keyPair(common.GetTlsCertificates()[0])
		if err != nil {
			return nil, fmt.Errorf("tls_certificates: %w", err)
		}
		getCert = func() (*tls.Certificate, error) { return cert, nil }
	default:
		return nil, errors.New("no server certificate")
	}

	var getRoots func() *x509.CertPool
	var sanMatch []func(*x509.Certificate) bool
	var vctx *tlsv3.CertificateValidationContext
	var sdsName string
	switch v := common.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		vctx = v.ValidationContext
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		sdsName = v.ValidationContextSdsSecretConfig.GetName()
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vctx = v.CombinedValidationContext.GetDefaultValidationContext()
		sdsName = v.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName()
	case nil:
	default:
		return nil, fmt.Errorf("validation context %T is not supported", v)
	}
	if vctx.GetTrustedCa() != nil {
		pem, err := dataSource(vctx.GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("trusted_ca: no certificates")
		}
		getRoots = func() *x509.CertPool { return pool }
	}
	switch {
	case sdsName == "":
	case sdsName == secretRootCA:
		if d.opts.Secrets == nil {
			return nil, fmt.Errorf("secret %q: the proxy has no roots", sdsName)
		}
		getRoots = d.opts.Secrets.RootCAs
	default:
		s, ok := snap.Secrets[sdsName]
		if !ok && strings.HasPrefix(sdsName, credentialPrefix) {
			d.log.Warn("gateway credential not received yet; its filter chain refuses connections", "secret", sdsName)
			missing := sdsName
			getCert = func() (*tls.Certificate, error) { return nil, fmt.Errorf("secret %q not received", missing) }
			getRoots = func() *x509.CertPool { return x509.NewCertPool() }
			break
		}
		if !ok || s.GetValidationContext() == nil {
			return nil, fmt.Errorf("secret %q: no such validation context", sdsName)
		}
		pem, err := dataSource(s.GetValidationContext().GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", sdsName, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("secret %q: no certificates", sdsName)
		}
		getRoots = func() *x509.CertPool { return pool }
	}
	for _, m := range vctx.GetMatchTypedSubjectAltNames() {
		f, err := rbac.StringMatch(m.GetMatcher())
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names: %w", err)
		}
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_URI:
			sanMatch = append(sanMatch, func(c *x509.Certificate) bool {
				for _, u := range c.URIs {
					if f(u.String()) {
						return true
					}
				}
				return false
			})
		case tlsv3.SubjectAltNameMatcher_DNS:
			sanMatch = append(sanMatch, func(c *x509.Certificate) bool {
				for _, n := range c.DNSNames {
					if f(n) {
						return true
					}
				}
				return false
			})
		default:
			return nil, fmt.Errorf("san type %s is not supported", m.GetSanType())
		}
	}

	requireClient := ctx.GetRequireClientCertificate().GetValue()
	if requireClient && getRoots == nil {
		return nil, errors.New("require_client_certificate without a validation context")
	}
	minV, maxV, err := tlsVersions(common.GetTlsParams())
	if err != nil {
		return nil, err
	}
	alpn := append([]string(nil), common.GetAlpnProtocols()...)
	base := &tls.Config{MinVersion: minV, MaxVersion: maxV, NextProtos: alpn}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		cert, err := getCert()
		if err != nil {
			return nil, fmt.Errorf("server certificate: %w", err)
		}
		c := &tls.Config{
			MinVersion:   minV,
			MaxVersion:   maxV,
			NextProtos:   alpnFor(alpn, hello.SupportedProtos),
			Certificates: []tls.Certificate{*cert},
		}
		if getRoots != nil {
			c.ClientCAs = getRoots()
			c.ClientAuth = tls.VerifyClientCertIfGiven
			if requireClient {
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
		}
		if len(sanMatch) > 0 {
			c.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
				if len(chains) == 0 || len(chains[0]) == 0 {
					if requireClient {
						return errors.New("no verified client certificate")
					}
					return nil
				}
				for _, m := range sanMatch {
					if m(chains[0][0]) {
						return nil
					}
				}
				return errors.New("client certificate subject alt names do not match")
			}
		}
		return c, nil
	}
	return &tlsServer{cfg: base}, nil
}

func tlsVersions(p *tlsv3.TlsParameters) (uint16, uint16, error) {
	conv := func(v tlsv3.TlsParameters_TlsProtocol, def uint16) (uint16, error) {
		switch v {
		case tlsv3.TlsParameters_TLS_AUTO:
			return def, nil
		case tlsv3.TlsParameters_TLSv1_2:
			return tls.VersionTLS12, nil
		case tlsv3.TlsParameters_TLSv1_3:
			return tls.VersionTLS13, nil
		}
		return 0, fmt.Errorf("tls version %s is not supported", v)
	}
	minV, err := conv(p.GetTlsMinimumProtocolVersion(), tls.VersionTLS12)
	if err != nil {
		return 0, 0, err
	}
	maxV, err := conv(p.GetTlsMaximumProtocolVersion(), tls.VersionTLS13)
	return minV, maxV, err
}

func keyPair(c *tlsv3.TlsCertificate) (*tls.Certificate, error) {
	chain, err := dataSource(c.GetCertificateChain())
	if err != nil {
		return nil, fmt.Errorf("certificate_chain: %w", err)
	}
	key, err := dataSource(c.GetPrivateKey())
	if err != nil {
		return nil, fmt.Errorf("private_key: %w", err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, err
	}
	return &cert, nil
}

func dataSource(ds *core.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *core.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *core.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *core.DataSource_Filename:
		return os.ReadFile(s.Filename)
	case nil:
		return nil, errors.New("data source is empty")
	default:
		return nil, fmt.Errorf("data source %T is not supported", s)
	}
}

// spiffeID returns the peer's SPIFFE identity (first spiffe:// URI SAN).
func spiffeID(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	for _, u := range cs.PeerCertificates[0].URIs {
		if s := u.String(); strings.HasPrefix(s, "spiffe://") {
			return s
		}
	}
	return ""
}

// alpnFor is the server's ALPN list for one handshake. Like Envoy, a
// client whose protocols share none with ours (a sidecar offering only
// "istio-peer-exchange, istio") proceeds without ALPN instead of being
// refused as crypto/tls would.
func alpnFor(ours, theirs []string) []string {
	for _, o := range ours {
		for _, t := range theirs {
			if o == t {
				return ours
			}
		}
	}
	return nil
}
