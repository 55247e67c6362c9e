package dataplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// inboundSnap is a sidecar's inbound listener: an mTLS chain and, when
// permissive, a plaintext chain, both HTTP to the app.
func inboundSnap(t *testing.T, port uint32, app string, permissive bool) *snapshotT {
	s := newSnap()
	s.Clusters["inbound|8080||"] = staticCluster("inbound|8080||", app)
	hc := &hcmv3.HttpConnectionManager{
		RouteSpecifier:           &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeTo("inbound|8080||", "inbound|8080||")},
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE_SET,
	}
	chains := []*listener.FilterChain{{
		Name:             "mtls",
		FilterChainMatch: &listener.FilterChainMatch{TransportProtocol: "tls"},
		TransportSocket:  tlsSocketOf(t, istioMutual()),
		Filters:          []*listener.Filter{hcmNetFilter(t, hc)},
	}}
	if permissive {
		chains = append(chains, &listener.FilterChain{
			Name:             "plaintext",
			FilterChainMatch: &listener.FilterChainMatch{TransportProtocol: "raw_buffer"},
			Filters:          []*listener.Filter{hcmNetFilter(t, hc)},
		})
	}
	s.Listeners["inbound"] = realListener("inbound", port, chains...)
	return s
}

func mtlsClient(ca *testCA, cert *tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.pool, Certificates: []tls.Certificate{*cert}, ServerName: "ignored",
		InsecureSkipVerify: true, // SPIFFE certificates carry no DNS name; verify the chain below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: ca.pool})
			return err
		},
	}}}
}

func TestMTLSStrictAndPermissive(t *testing.T) { forEngines(t, testMTLSStrictAndPermissive) }

func testMTLSStrictAndPermissive(t *testing.T, engine Engine) {
	ca := newTestCA(t)
	serverCert, _, _ := ca.issue(t, "spiffe://cluster.local/ns/default/sa/server")
	clientCert, _, _ := ca.issue(t, "spiffe://cluster.local/ns/default/sa/client")
	secrets := &testSecrets{cert: serverCert, pool: ca.pool}
	app := backend(t, "app")

	for _, permissive := range []bool{false, true} {
		t.Run(fmt.Sprintf("permissive=%v", permissive), func(t *testing.T) {
			port := freePort(t)
			d := newDP(t, Options{Engine: engine, Secrets: secrets})
			if err := d.Apply(inboundSnap(t, port, app, permissive)); err != nil {
				t.Fatal(err)
			}
			u := fmt.Sprintf("https://127.0.0.1:%d/x", port)
			resp, body := get(t, mtlsClient(ca, clientCert), u, "X-Forwarded-Client-Cert", "By=spoofed")
			if resp.StatusCode != 200 || body != "app /x" {
				t.Fatalf("mtls: %d %q", resp.StatusCode, body)
			}
			xfcc := resp.Header.Get("Echo-X-Forwarded-Client-Cert")
			if !strings.Contains(xfcc, "URI=spiffe://cluster.local/ns/default/sa/client") || strings.Contains(xfcc, "spoofed") {
				t.Errorf("x-forwarded-client-cert = %q", xfcc)
			}
			// Without a client certificate the handshake fails.
			noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			if _, err := noCert.Get(u); err == nil {
				t.Error("TLS without a client certificate was accepted")
			}
			// A certificate from another CA is refused.
			other := newTestCA(t)
			otherCert, _, _ := other.issue(t, "spiffe://cluster.local/ns/default/sa/client")
			if _, err := mtlsClient(ca, otherCert).Get(u); err == nil {
				t.Error("client certificate of an unknown CA was accepted")
			}
			_, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/x", port))
			if permissive && err != nil {
				t.Errorf("permissive refused plaintext: %v", err)
			}
			if !permissive && err == nil {
				t.Error("strict accepted plaintext")
			}
		})
	}
}

func TestCertificateRotationWithoutRestart(t *testing.T) {
	ca := newTestCA(t)
	c1, _, _ := ca.issue(t, "spiffe://cluster.local/ns/default/sa/server-1")
	c2, _, _ := ca.issue(t, "spiffe://cluster.local/ns/default/sa/server-2")
	client, _, _ := ca.issue(t, "spiffe://cluster.local/ns/default/sa/client")
	secrets := &testSecrets{cert: c1, pool: ca.pool}
	port := freePort(t)
	d := newDP(t, Options{Secrets: secrets})
	if err := d.Apply(inboundSnap(t, port, backend(t, "app"), false)); err != nil {
		t.Fatal(err)
	}
	peerURI := func() string {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*client}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].URIs[0].String()
	}
	if got := peerURI(); !strings.HasSuffix(got, "server-1") {
		t.Fatalf("served %s", got)
	}
	secrets.mu.Lock()
	secrets.cert = c2
	secrets.mu.Unlock()
	if got := peerURI(); !strings.HasSuffix(got, "server-2") {
		t.Fatalf("after rotation served %s", got)
	}
}

// gatewaySnap terminates TLS for two hosts with Secret resources; MUTUAL
// also asks for client certificates checked against the -cacert secret.
func TestGatewaySimpleMutualAndPassthrough(t *testing.T) {
	forEngines(t, testGatewaySimpleMutualAndPassthrough)
}

func testGatewaySimpleMutualAndPassthrough(t *testing.T, engine Engine) {
	ca := newTestCA(t)
	_, fooPEM, fooKey := ca.issue(t, "", "foo.example.com")
	_, barPEM, barKey := ca.issue(t, "", "bar.example.com")
	clientCert, _, _ := ca.issue(t, "", "client.example.com")
	app := backend(t, "app")
	// The passthrough target terminates TLS itself.
	ptCert, _, _ := ca.issue(t, "", "pass.example.com")
	ptLn, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*ptCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ptLn.Close()
	go http.Serve(ptLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "passthrough") }))

	s := newSnap()
	s.Clusters["app"] = staticCluster("app", app)
	s.Clusters["pass"] = staticCluster("pass", ptLn.Addr().String())
	s.Routes["https.443.foo"] = routeTo("https.443.foo", "app")
	s.Secrets["kubernetes://foo"] = &tlsv3.Secret{Name: "kubernetes://foo", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: fooPEM}},
		PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: fooKey}}}}}
	s.Secrets["kubernetes://bar"] = &tlsv3.Secret{Name: "kubernetes://bar", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: barPEM}},
		PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: barKey}}}}}
	s.Secrets["kubernetes://bar-cacert"] = &tlsv3.Secret{Name: "kubernetes://bar-cacert", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: ca.pem}}}}}
	simple := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://foo"}}, AlpnProtocols: []string{"h2", "http/1.1"}}}
	mutual := &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://bar"}},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "kubernetes://bar-cacert"}},
		AlpnProtocols:                  []string{"http/1.1"}}}
	port := freePort(t)
	s.Listeners["0.0.0.0_443"] = realListener("0.0.0.0_443", port,
		&listener.FilterChain{FilterChainMatch: &listener.FilterChainMatch{ServerNames: []string{"foo.example.com"}},
			TransportSocket: tlsSocketOf(t, simple), Filters: []*listener.Filter{hcmNetFilter(t, rds("https.443.foo"))}},
		&listener.FilterChain{FilterChainMatch: &listener.FilterChainMatch{ServerNames: []string{"bar.example.com"}},
			TransportSocket: tlsSocketOf(t, mutual), Filters: []*listener.Filter{hcmNetFilter(t, rds("https.443.foo"))}},
		&listener.FilterChain{FilterChainMatch: &listener.FilterChainMatch{ServerNames: []string{"*.example.com"}},
			Filters: []*listener.Filter{tcpNetFilter(t, "pass")}},
	)
	d := newDP(t, Options{Engine: engine, Node: testNode("ingress", "istio-system")})
	if err := d.Apply(s); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	client := func(sni string, certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialTLSContext: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: ca.pool, ServerName: sni, Certificates: certs},
			ForceAttemptHTTP2: true,
		}}
	}
	resp, body := get(t, client("foo.example.com"), "https://foo.example.com/simple")
	if resp.StatusCode != 200 || body != "app /simple" || resp.ProtoMajor != 2 {
		t.Fatalf("SIMPLE: %d %s %q", resp.StatusCode, resp.Proto, body)
	}
	if _, err := client("bar.example.com").Get("https://bar.example.com/"); err == nil {
		t.Error("MUTUAL accepted a client without certificate")
	}
	resp, body = get(t, client("bar.example.com", *clientCert), "https://bar.example.com/mutual")
	if resp.StatusCode != 200 || body != "app /mutual" {
		t.Fatalf("MUTUAL: %d %q", resp.StatusCode, body)
	}
	resp, body = get(t, client("pass.example.com"), "https://pass.example.com/")
	if resp.StatusCode != 200 || body != "passthrough" {
		t.Fatalf("PASSTHROUGH: %d %q", resp.StatusCode, body)
	}
	if _, err := client("other.org").Get("https://other.org/"); err == nil {
		t.Error("unknown SNI was served")
	}
}

// TestGatewayCredentialArrivesLater: a listener naming a credential that
// has not arrived is accepted (no NACK) and refuses handshakes; the
// snapshot that brings the Secret makes it serve.
func TestGatewayCredentialArrivesLater(t *testing.T) {
	ca := newTestCA(t)
	_, certPEM, keyPEM := ca.issue(t, "", "late.example.com")
	port := freePort(t)
	s := newSnap()
	s.Clusters["app"] = staticCluster("app", backend(t, "app"))
	s.Routes["r"] = routeTo("r", "app")
	simple := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://late"}}}}
	s.Listeners["gw"] = realListener("gw", port, &listener.FilterChain{TransportSocket: tlsSocketOf(t, simple), Filters: []*listener.Filter{hcmNetFilter(t, rds("r"))}})
	d := newDP(t, Options{})
	if err := d.Apply(s); err != nil {
		t.Fatalf("missing credential NACKed: %v", err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "late.example.com"}, DisableKeepAlives: true}}
	u := fmt.Sprintf("https://127.0.0.1:%d/", port)
	if _, err := c.Get(u); err == nil {
		t.Fatal("served without its credential")
	}
	s2 := s.Clone()
	s2.Secrets["kubernetes://late"] = &tlsv3.Secret{Name: "kubernetes://late", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: certPEM}},
		PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: keyPEM}}}}}
	if err := d.Apply(s2); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, c, u); resp.StatusCode != 200 || body != "app /" {
		t.Fatalf("after the credential arrived: %d %q", resp.StatusCode, body)
	}
}
