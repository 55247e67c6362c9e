package upstream

import (
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestSANMatching(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/default/sa/reviews")
	cert := &x509.Certificate{URIs: []*url.URL{spiffe}, DNSNames: []string{"*.example.com", "api.internal"}}
	sm := func(m *matcherv3.StringMatcher) stringMatcher {
		c, err := compileStringMatcher(m)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	prefix := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
	}
	cases := []struct {
		name string
		m    sanMatcher
		want bool
	}{
		{"URI exact", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_URI, m: sm(exact("spiffe://cluster.local/ns/default/sa/reviews"))}, true},
		{"URI other account", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_URI, m: sm(exact("spiffe://cluster.local/ns/default/sa/ratings"))}, false},
		{"URI prefix", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_URI, m: sm(prefix("spiffe://cluster.local/ns/default/"))}, true},
		{"URI matcher does not look at DNS", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_URI, m: sm(exact("api.internal"))}, false},
		{"DNS exact", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_DNS, m: sm(exact("api.internal"))}, true},
		{"DNS wildcard certificate", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_DNS, m: sm(exact("www.example.com"))}, true},
		{"DNS wildcard covers one label", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_DNS, m: sm(exact("a.b.example.com"))}, false},
		{"untyped matches any SAN", sanMatcher{m: sm(exact("api.internal"))}, true},
		{"ignore case", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_DNS, m: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "API.internal"}, IgnoreCase: true})}, true},
		{"regex", sanMatcher{typ: tlsv3.SubjectAltNameMatcher_URI, m: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `spiffe://cluster\.local/ns/[^/]+/sa/reviews`}}})}, true},
	}
	for _, tc := range cases {
		if got := tc.m.matches(cert); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestValidationContextRejects(t *testing.T) {
	for name, v := range map[string]*tlsv3.CertificateValidationContext{
		"spki pinning":     {VerifyCertificateSpki: []string{"x"}},
		"crl":              {Crl: &corev3.DataSource{}},
		"accept untrusted": {TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED},
	} {
		if err := checkValidation(v); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestDataSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(path, []byte("from file"), 0o600)
	for _, tc := range []struct {
		ds   *corev3.DataSource
		want string
	}{
		{&corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "inline"}}, "inline"},
		{&corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("bytes")}}, "bytes"},
		{&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}, "from file"},
	} {
		got, err := dataSource(tc.ds)
		if err != nil || string(got) != tc.want {
			t.Errorf("%v: %q %v", tc.ds, got, err)
		}
	}
	if _, err := dataSource(&corev3.DataSource{Specifier: &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: "X"}}); err == nil {
		t.Error("environment variable data source accepted")
	}
}

func TestALPNPerPool(t *testing.T) {
	mesh := &tlsSocket{alpn: []string{"h2", "istio-peer-exchange", "istio"}}
	plain := &tlsSocket{alpn: []string{"h2", "http/1.1"}}
	for _, tc := range []struct {
		s    *tlsSocket
		c    codec
		want []string
	}{
		{mesh, codecTCP, []string{"istio-peer-exchange", "istio"}},
		{mesh, codecHTTP1, []string{"istio-http/1.1", "istio-peer-exchange", "istio"}},
		{mesh, codecHTTP2, []string{"istio-h2", "h2", "istio-peer-exchange", "istio"}},
		{plain, codecTCP, []string{"http/1.1"}},
		{plain, codecHTTP1, []string{"http/1.1"}},
		{plain, codecHTTP2, []string{"h2", "http/1.1"}},
		{&tlsSocket{}, codecHTTP2, []string{"h2"}},
		{&tlsSocket{}, codecHTTP1, []string{}},
	} {
		if got := tc.s.withALPN(tc.c).alpn; !slices.Equal(got, tc.want) {
			t.Errorf("%v for codec %d: %q, want %q", tc.s.alpn, tc.c, got, tc.want)
		}
	}
	if got := plain.withALPN(codecHTTP2); got != plain {
		t.Errorf("HTTP/2 copied a socket whose ALPN already suits it: %v", got.alpn)
	}
}
