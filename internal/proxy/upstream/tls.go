package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// Transport socket names.
const (
	TLSSocketName       = "envoy.transport_sockets.tls"
	RawBufferSocketName = "envoy.transport_sockets.raw_buffer"
	// SecretDefault and SecretRootCA are resolved from config.Secrets.
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// tlsSocket is a parsed UpstreamTlsContext.
type tlsSocket struct {
	id         string // index in the cluster, for pool identity
	sni        string
	alpn       []string
	minVersion uint16
	maxVersion uint16
	// cert returns the client certificate; nil: none.
	cert func() (*tls.Certificate, error)
	// roots returns the trust anchors; nil: the peer is not verified.
	roots func() (*x509.CertPool, error)
	sans  []sanMatcher
}

type socketMatch struct {
	match  map[string]*structpb.Value
	socket *tlsSocket // nil: raw buffer
}

type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType // SAN_TYPE_UNSPECIFIED: any type
	m   stringMatcher
}

func socketID(s *tlsSocket) string {
	if s == nil {
		return "raw"
	}
	return s.id
}

func parseSockets(cfg *clusterConfig, msg *clusterv3.Cluster, snap *config.Snapshot, secrets config.Secrets) error {
	if msg.GetTransportSocketMatcher() != nil {
		return fmt.Errorf("transport_socket_matcher is not supported")
	}
	p := &socketParser{cfg: cfg, snap: snap, secrets: secrets}
	var err error
	cfg.defaultSocket, err = p.parse("default", msg.GetTransportSocket())
	if err != nil {
		return fmt.Errorf("transport_socket: %w", err)
	}
	for i, m := range msg.GetTransportSocketMatches() {
		sock, err := p.parse(fmt.Sprintf("match%d", i), m.GetTransportSocket())
		if err != nil {
			return fmt.Errorf("transport_socket_matches[%d] %q: %w", i, m.GetName(), err)
		}
		cfg.socketMatches = append(cfg.socketMatches, socketMatch{match: m.GetMatch().GetFields(), socket: sock})
	}
	return nil
}

// socketFor picks the transport socket of an endpoint by its
// envoy.transport_socket_match metadata.
func (cfg *clusterConfig) socketFor(md map[string]map[string]any) (*tlsSocket, error) {
	if len(cfg.socketMatches) == 0 {
		return cfg.defaultSocket, nil
	}
	labels := md["envoy.transport_socket_match"]
	for _, m := range cfg.socketMatches {
		ok := true
		for k, want := range m.match {
			got, present := labels[k]
			if !present {
				ok = false
				break
			}
			gv, err := structpb.NewValue(got)
			if err != nil || !proto.Equal(gv, want) {
				ok = false
				break
			}
		}
		if ok {
			return m.socket, nil
		}
	}
	return cfg.defaultSocket, nil
}

type socketParser struct {
	cfg     *clusterConfig
	snap    *config.Snapshot
	secrets config.Secrets
}

func (p *socketParser) dependOn(name string) {
	if p.cfg.secretPrints == nil {
		p.cfg.secretPrints = map[string][]byte{}
	}
	p.cfg.secretPrints[name] = secretPrint(p.snap, name)
}

func secretPrint(snap *config.Snapshot, name string) []byte {
	s := snap.Secrets[name]
	if s == nil {
		return nil
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if b == nil {
		b = []byte{}
	}
	return b
}

func sameSecrets(cfg *clusterConfig, snap *config.Snapshot) bool {
	for name, print := range cfg.secretPrints {
		now := secretPrint(snap, name)
		if (now == nil) != (print == nil) || string(now) != string(print) {
			return false
		}
	}
	return true
}

func (p *socketParser) parse(id string, ts *corev3.TransportSocket) (*tlsSocket, error) {
	if ts == nil {
		return nil, nil
	}
	switch ts.GetName() {
	case RawBufferSocketName:
		return nil, nil
	case TLSSocketName:
	default:
		return nil, fmt.Errorf("transport socket %q is not supported", ts.GetName())
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	sock := &tlsSocket{id: id, sni: ctx.GetSni()}
	if ctx.GetAutoHostSni() || ctx.GetAutoSniSanValidation() {
		return nil, fmt.Errorf("tls: auto_host_sni is not supported")
	}
	common := ctx.GetCommonTlsContext()
	sock.alpn = append([]string(nil), common.GetAlpnProtocols()...)
	if tp := common.GetTlsParams(); tp != nil {
		sock.minVersion = tlsVersion(tp.GetTlsMinimumProtocolVersion())
		sock.maxVersion = tlsVersion(tp.GetTlsMaximumProtocolVersion())
	}
	if common.GetTlsCertificateProviderInstance() != nil || common.GetCustomHandshaker() != nil || common.GetTlsCertificateCertificateProvider() != nil || common.GetTlsCertificateCertificateProviderInstance() != nil || common.GetCustomTlsCertificateSelector() != nil {
		return nil, fmt.Errorf("tls: certificate providers and custom handshakers are not supported")
	}
	switch {
	case len(common.GetTlsCertificateSdsSecretConfigs()) > 0:
		sds := common.GetTlsCertificateSdsSecretConfigs()[0]
		if err := checkSDS(sds); err != nil {
			return nil, err
		}
		name := sds.GetName()
		if name == SecretDefault {
			if p.secrets == nil {
				return nil, fmt.Errorf("tls: secret %q needs the proxy's own certificate, which is not available", name)
			}
			sock.cert = p.secrets.WorkloadCertificate
		} else {
			p.dependOn(name)
			snap := p.snap
			sock.cert = func() (*tls.Certificate, error) {
				s := snap.Secrets[name]
				if s == nil || s.GetTlsCertificate() == nil {
					return nil, fmt.Errorf("secret %q with a tls_certificate is not available", name)
				}
				return keyPair(s.GetTlsCertificate())
			}
		}
	case len(common.GetTlsCertificates()) > 0:
		c, err := keyPair(common.GetTlsCertificates()[0])
		if err != nil {
			return nil, fmt.Errorf("tls: tls_certificates: %w", err)
		}
		sock.cert = func() (*tls.Certificate, error) { return c, nil }
	}
	var inline *tlsv3.CertificateValidationContext
	var sds *tlsv3.SdsSecretConfig
	switch vc := common.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		inline = vc.ValidationContext
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		sds = vc.ValidationContextSdsSecretConfig
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		inline = vc.CombinedValidationContext.GetDefaultValidationContext()
		sds = vc.CombinedValidationContext.GetValidationContextSdsSecretConfig()
		if vc.CombinedValidationContext.GetValidationContextCertificateProvider() != nil || vc.CombinedValidationContext.GetValidationContextCertificateProviderInstance() != nil {
			return nil, fmt.Errorf("tls: validation certificate providers are not supported")
		}
	default:
		return nil, fmt.Errorf("tls: validation context %T is not supported", vc)
	}
	if inline != nil {
		if err := checkValidation(inline); err != nil {
			return nil, err
		}
		for _, m := range inline.GetMatchTypedSubjectAltNames() {
			if m.GetSanType() == tlsv3.SubjectAltNameMatcher_OTHER_NAME {
				return nil, fmt.Errorf("tls: OTHER_NAME SAN matchers are not supported")
			}
			sm, err := compileStringMatcher(m.GetMatcher())
			if err != nil {
				return nil, fmt.Errorf("tls: SAN matcher: %w", err)
			}
			sock.sans = append(sock.sans, sanMatcher{typ: m.GetSanType(), m: sm})
		}
		for _, m := range inline.GetMatchSubjectAltNames() {
			sm, err := compileStringMatcher(m)
			if err != nil {
				return nil, fmt.Errorf("tls: SAN matcher: %w", err)
			}
			sock.sans = append(sock.sans, sanMatcher{m: sm})
		}
		if ca := inline.GetTrustedCa(); ca != nil {
			pool, err := certPool(ca)
			if err != nil {
				return nil, fmt.Errorf("tls: trusted_ca: %w", err)
			}
			sock.roots = func() (*x509.CertPool, error) { return pool, nil }
		}
	}
	if sds != nil {
		if err := checkSDS(sds); err != nil {
			return nil, err
		}
		name := sds.GetName()
		if name == SecretRootCA {
			if p.secrets == nil {
				return nil, fmt.Errorf("tls: secret %q needs the proxy's own roots, which are not available", name)
			}
			secrets := p.secrets
			sock.roots = func() (*x509.CertPool, error) {
				if r := secrets.RootCAs(); r != nil {
					return r, nil
				}
				return nil, errors.New("mesh roots are not available yet")
			}
		} else {
			p.dependOn(name)
			snap := p.snap
			sock.roots = func() (*x509.CertPool, error) {
				s := snap.Secrets[name]
				if s == nil || s.GetValidationContext().GetTrustedCa() == nil {
					return nil, fmt.Errorf("secret %q with a trusted_ca is not available", name)
				}
				return certPool(s.GetValidationContext().GetTrustedCa())
			}
		}
	}
	if len(sock.sans) > 0 && sock.roots == nil {
		return nil, fmt.Errorf("tls: subject alt name matchers need a trusted CA")
	}
	return sock, nil
}

func checkSDS(s *tlsv3.SdsSecretConfig) error {
	if sc := s.GetSdsConfig(); sc != nil && sc.GetAds() == nil {
		return fmt.Errorf("tls: secret %q: only ADS or unset sds_config is supported", s.GetName())
	}
	return nil
}

func checkValidation(v *tlsv3.CertificateValidationContext) error {
	switch {
	case len(v.GetVerifyCertificateSpki()) > 0, len(v.GetVerifyCertificateHash()) > 0:
		return fmt.Errorf("tls: certificate pinning is not supported")
	case v.GetCrl() != nil:
		return fmt.Errorf("tls: crl is not supported")
	case v.GetCustomValidatorConfig() != nil:
		return fmt.Errorf("tls: custom validators are not supported")
	case v.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED:
		return fmt.Errorf("tls: ACCEPT_UNTRUSTED is not supported")
	case v.GetCaCertificateProviderInstance() != nil:
		return fmt.Errorf("tls: CA certificate providers are not supported")
	}
	return nil
}

func tlsVersion(v tlsv3.TlsParameters_TlsProtocol) uint16 {
	switch v {
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13
	}
	return 0
}

func dataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	}
	return nil, fmt.Errorf("data source %T is not supported", ds.GetSpecifier())
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
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

func certPool(ds *corev3.DataSource) (*x509.CertPool, error) {
	pem, err := dataSource(ds)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificates")
	}
	return pool, nil
}

// codec is what a pool's connections speak.
type codec int

const (
	codecTCP codec = iota
	codecHTTP1
	codecHTTP2
)

// withALPN returns the socket with the ALPN list of a codec: "h2" added
// for HTTP/2 and removed otherwise; on mesh mTLS (the cluster offers
// "istio") HTTP connections also offer "istio-http/1.1" or "istio-h2"
// first, as Istio's sidecars do, so that the server's sidecar picks its
// HTTP filter chain on a port whose protocol it sniffs (docs/xds.md).
func (s *tlsSocket) withALPN(c codec) *tlsSocket {
	alpn := make([]string, 0, len(s.alpn)+2)
	mesh := slices.Contains(s.alpn, "istio")
	switch {
	case c == codecHTTP1 && mesh:
		alpn = append(alpn, "istio-http/1.1")
	case c == codecHTTP2 && mesh:
		alpn = append(alpn, "istio-h2", "h2")
	case c == codecHTTP2:
		alpn = append(alpn, "h2")
	}
	for _, p := range s.alpn {
		if p != "h2" && !slices.Contains(alpn, p) {
			alpn = append(alpn, p)
		}
	}
	if slices.Equal(alpn, s.alpn) {
		return s
	}
	out := *s
	out.alpn = alpn
	return &out
}

// clientConfig is the crypto/tls configuration for one handshake.
func (s *tlsSocket) clientConfig() *tls.Config {
	cfg := &tls.Config{
		ServerName:         s.sni,
		NextProtos:         s.alpn,
		MinVersion:         s.minVersion,
		MaxVersion:         s.maxVersion,
		InsecureSkipVerify: true, // verified in VerifyConnection, like Envoy: chain + SAN matchers, no hostname check
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if s.cert != nil {
		get := s.cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return get()
		}
	}
	if s.roots != nil {
		cfg.VerifyConnection = s.verify
	}
	return cfg
}

func (s *tlsSocket) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("upstream presented no certificate")
	}
	roots, err := s.roots()
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("upstream certificate: %w", err)
	}
	if len(s.sans) == 0 {
		return nil
	}
	for _, m := range s.sans {
		if m.matches(leaf) {
			return nil
		}
	}
	return fmt.Errorf("upstream certificate SANs %v match none of the expected subject alt names", leafSANs(leaf))
}

func (m sanMatcher) matches(c *x509.Certificate) bool {
	any := m.typ == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED
	if any || m.typ == tlsv3.SubjectAltNameMatcher_URI {
		for _, u := range c.URIs {
			if m.m.match(u.String()) {
				return true
			}
		}
	}
	if any || m.typ == tlsv3.SubjectAltNameMatcher_DNS {
		for _, d := range c.DNSNames {
			if m.m.match(d) || (m.typ == tlsv3.SubjectAltNameMatcher_DNS && dnsWildcardMatch(d, m.m)) {
				return true
			}
		}
	}
	if any || m.typ == tlsv3.SubjectAltNameMatcher_EMAIL {
		for _, e := range c.EmailAddresses {
			if m.m.match(e) {
				return true
			}
		}
	}
	if any || m.typ == tlsv3.SubjectAltNameMatcher_IP_ADDRESS {
		for _, ip := range c.IPAddresses {
			if m.m.match(ip.String()) {
				return true
			}
		}
	}
	return false
}

// dnsWildcardMatch lets a certificate's "*.example.com" satisfy an exact
// matcher for "foo.example.com", as Envoy does for DNS SANs.
func dnsWildcardMatch(san string, m stringMatcher) bool {
	if !strings.HasPrefix(san, "*.") || m.kind != "exact" {
		return false
	}
	want := m.value
	if m.ignoreCase {
		want = strings.ToLower(want)
		san = strings.ToLower(san)
	}
	i := strings.IndexByte(want, '.')
	return i > 0 && want[i:] == san[1:]
}

func leafSANs(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       string // exact, prefix, suffix, contains, regex
	value      string
	ignoreCase bool
	re         *regexp.Regexp
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = "exact", p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = "prefix", p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = "suffix", p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = "contains", p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return sm, err
		}
		sm.kind, sm.re = "regex", re
	default:
		return sm, fmt.Errorf("string matcher %T is not supported", p)
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

func (m stringMatcher) match(s string) bool {
	if m.kind == "regex" {
		return m.re.MatchString(s)
	}
	if m.ignoreCase {
		s = strings.ToLower(s)
	}
	switch m.kind {
	case "exact":
		return s == m.value
	case "prefix":
		return strings.HasPrefix(s, m.value)
	case "suffix":
		return strings.HasSuffix(s, m.value)
	case "contains":
		return strings.Contains(s, m.value)
	}
	return false
}
