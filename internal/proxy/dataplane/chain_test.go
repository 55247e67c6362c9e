package dataplane

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestSelectChain(t *testing.T) {
	mk := func(name string, m *listener.FilterChainMatch) *chainRT { return &chainRT{name: name, match: m} }
	port := func(p uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(p) }
	chains := []*chainRT{
		mk("9080-tls", &listener.FilterChainMatch{DestinationPort: port(9080), TransportProtocol: "tls", ApplicationProtocols: []string{"istio-peer-exchange", "istio"}}),
		mk("9080-plain", &listener.FilterChainMatch{DestinationPort: port(9080), TransportProtocol: "raw_buffer"}),
		mk("sni-exact", &listener.FilterChainMatch{DestinationPort: port(443), ServerNames: []string{"foo.example.com"}}),
		mk("sni-wild", &listener.FilterChainMatch{DestinationPort: port(443), ServerNames: []string{"*.example.com"}}),
		mk("sni-wild-longer", &listener.FilterChainMatch{DestinationPort: port(443), ServerNames: []string{"*.bar.example.com"}}),
		mk("http-sniffed", &listener.FilterChainMatch{DestinationPort: port(7000), ApplicationProtocols: []string{"http/1.1", "h2c"}}),
		mk("tcp-7000", &listener.FilterChainMatch{DestinationPort: port(7000)}),
		mk("cidr-24", &listener.FilterChainMatch{DestinationPort: port(5000), PrefixRanges: []*core.CidrRange{{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(24)}}}),
		mk("cidr-16", &listener.FilterChainMatch{DestinationPort: port(5000), PrefixRanges: []*core.CidrRange{{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(16)}}}),
		mk("9000-mtls-http", &listener.FilterChainMatch{DestinationPort: port(9000), TransportProtocol: "tls", ApplicationProtocols: []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}}),
		mk("9000-mtls-tcp", &listener.FilterChainMatch{DestinationPort: port(9000), TransportProtocol: "tls", ApplicationProtocols: []string{"istio-peer-exchange", "istio"}}),
		mk("passthrough", nil),
	}
	dst := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	cases := []struct {
		name  string
		facts connFacts
		want  string
	}{
		{"mtls", connFacts{dst: dst("10.0.0.1:9080"), transport: "tls", alpn: []string{"istio"}}, "9080-tls"},
		{"plaintext on permissive port", connFacts{dst: dst("10.0.0.1:9080"), transport: "raw_buffer"}, "9080-plain"},
		// Like Envoy, a connection that matched a port's chains never falls
		// back to the chains without a port.
		{"tls without istio alpn", connFacts{dst: dst("10.0.0.1:9080"), transport: "tls", alpn: []string{"h2"}}, ""},
		{"sni exact beats wildcard", connFacts{dst: dst("1.2.3.4:443"), transport: "tls", sni: "foo.example.com"}, "sni-exact"},
		{"longest wildcard", connFacts{dst: dst("1.2.3.4:443"), transport: "tls", sni: "x.bar.example.com"}, "sni-wild-longer"},
		{"wildcard", connFacts{dst: dst("1.2.3.4:443"), transport: "tls", sni: "baz.example.com"}, "sni-wild"},
		{"unknown sni", connFacts{dst: dst("1.2.3.4:443"), transport: "tls", sni: "other.org"}, ""},
		{"sniffed http", connFacts{dst: dst("1.2.3.4:7000"), transport: "raw_buffer", alpn: []string{"h2c"}}, "http-sniffed"},
		{"not http", connFacts{dst: dst("1.2.3.4:7000"), transport: "raw_buffer"}, "tcp-7000"},
		{"longest prefix", connFacts{dst: dst("10.0.0.7:5000")}, "cidr-24"},
		{"shorter prefix", connFacts{dst: dst("10.0.9.7:5000")}, "cidr-16"},
		{"no prefix", connFacts{dst: dst("11.0.0.1:5000")}, ""},
		{"other port", connFacts{dst: dst("10.0.0.1:1234")}, "passthrough"},
		// Both chains list one of the client's protocols: the first it
		// offers decides, like Envoy.
		{"sniffed port, mesh HTTP/1.1", connFacts{dst: dst("10.0.0.1:9000"), transport: "tls", alpn: []string{"istio-http/1.1", "istio-peer-exchange", "istio"}}, "9000-mtls-http"},
		{"sniffed port, mesh HTTP/2", connFacts{dst: dst("10.0.0.1:9000"), transport: "tls", alpn: []string{"istio-h2", "h2", "istio-peer-exchange", "istio"}}, "9000-mtls-http"},
		{"sniffed port, mesh TCP", connFacts{dst: dst("10.0.0.1:9000"), transport: "tls", alpn: []string{"istio-peer-exchange", "istio"}}, "9000-mtls-tcp"},
		{"sniffed port, TCP listed first", connFacts{dst: dst("10.0.0.1:9000"), transport: "tls", alpn: []string{"istio", "istio-http/1.1"}}, "9000-mtls-tcp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			def := &chainRT{name: "default"}
			got := selectChain(chains, def, c.facts)
			want := c.want
			if want == "" {
				want = "default"
			}
			if got.name != want {
				t.Fatalf("got %s, want %s", got.name, want)
			}
		})
	}
	if got := selectChain(chains[:2], nil, connFacts{dst: dst("1.1.1.1:1")}); got != nil {
		t.Fatalf("no match should give no chain, got %s", got.name)
	}
}

func TestSniff(t *testing.T) {
	pipe := func(write func(net.Conn)) *bufConn {
		a, b := net.Pipe()
		go write(a)
		t.Cleanup(func() { a.Close(); b.Close() })
		b.SetReadDeadline(time.Now().Add(2 * time.Second))
		return newBufConn(b)
	}
	c := pipe(func(a net.Conn) {
		tls.Client(a, &tls.Config{ServerName: "foo.example.com", NextProtos: []string{"istio", "h2"}}).Handshake()
	})
	isTLS, sni, alpn := sniffTLS(c)
	if !isTLS || sni != "foo.example.com" || len(alpn) != 2 || alpn[0] != "istio" {
		t.Fatalf("tls: %v %q %v", isTLS, sni, alpn)
	}
	for in, want := range map[string]string{
		"GET /x HTTP/1.1\r\nHost: a\r\n\r\n": "http/1.1",
		string(h2Preface):                    "h2c",
		"\x00\x01binary-protocol\r\n":        "",
		"HELLO world\r\n":                    "",
	} {
		c := pipe(func(a net.Conn) { a.Write([]byte(in)) })
		if isTLS, _, _ := sniffTLS(c); isTLS {
			t.Errorf("%q sniffed as TLS", in)
		}
		if got := sniffHTTP(c); got != want {
			t.Errorf("sniffHTTP(%q) = %q, want %q", in, got, want)
		}
		// Peeking consumed nothing.
		b := make([]byte, len(in))
		if n, _ := c.Read(b); string(b[:n]) != in[:n] || n == 0 {
			t.Errorf("peeked bytes lost: %q", b[:n])
		}
	}
}

// exhaustedConn serves its bytes, then reports any further read: sniffing
// must decide from what a client already sent, never wait for more.
type exhaustedConn struct {
	net.Conn
	t    *testing.T
	data []byte
}

func (c *exhaustedConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		c.t.Errorf("sniffing waited for more bytes")
		return 0, io.EOF
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

func TestSniffDecidesFromWhatArrived(t *testing.T) {
	for in, want := range map[string]string{
		"GET /x HTTP/1.1\r\nHost: a\r\n\r\n": "http/1.1",
		string(h2Preface):                    "h2c",
		"SSH-2.0-OpenSSH\r\n":                "",
	} {
		c := newBufConn(&exhaustedConn{t: t, data: []byte(in)})
		if got := sniffHTTP(c); got != want {
			t.Errorf("sniffHTTP(%q) = %q, want %q", in, got, want)
		}
	}
}
