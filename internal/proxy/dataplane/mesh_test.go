package dataplane

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// upstreamEngine uses the real cluster set (internal/proxy/upstream) with
// the test router.
type upstreamEngine struct{ testEngine }

func (upstreamEngine) BuildUpstreams(snap *config.Snapshot, prev Upstreams, secrets config.Secrets, log *slog.Logger) (Upstreams, error) {
	return BuildUpstreams(snap, prev, secrets, log)
}

func istioMutualUpstream(t testing.TB, san string) *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.9000_._.db.default.svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: san}}}}},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
			}},
		},
	}
}

// TestMutualTLSBetweenTwoDataplanes: a client sidecar's outbound TCP
// listener originates ISTIO_MUTUAL to a server sidecar's STRICT inbound
// listener, whose network RBAC admits only the client's identity.
func TestMutualTLSBetweenTwoDataplanes(t *testing.T) {
	ca := newTestCA(t)
	serverID := "spiffe://cluster.local/ns/default/sa/db"
	clientID := "spiffe://cluster.local/ns/default/sa/app"
	serverCert, _, _ := ca.issue(t, serverID)
	clientCert, _, _ := ca.issue(t, clientID)
	strangerCert, _, _ := ca.issue(t, "spiffe://cluster.local/ns/other/sa/stranger")
	echo := echoServer(t)
	inPort, outPort, out2Port := freePort(t), freePort(t), freePort(t)

	allowApp := &rbacnet.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"app-only": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: clientID}}}}}},
	}}}}
	reg := prometheus.NewRegistry()
	server := newDP(t, Options{Engine: upstreamEngine{}, Registry: reg, Secrets: &testSecrets{cert: serverCert, pool: ca.pool}, Node: testNode("db", "default")})
	in := newSnap()
	in.Clusters["inbound|9000||"] = staticCluster("inbound|9000||", echo)
	in.Listeners["in"] = realListener("in", inPort, &listener.FilterChain{
		FilterChainMatch: &listener.FilterChainMatch{TransportProtocol: "tls"},
		TransportSocket:  tlsSocketOf(t, istioMutual()),
		Filters: []*listener.Filter{
			{Name: netRBACFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, allowApp)}},
			statsNetFilter(t, reporterInbound),
			tcpNetFilter(t, "inbound|9000||"),
		},
	})
	// Istio's inbound context offers the istio ALPNs; the chain sees them.
	if err := server.Apply(in); err != nil {
		t.Fatal(err)
	}

	clientSnap := func(port uint32) *snapshotT {
		s := newSnap()
		c := staticCluster("outbound|9000||db.default.svc.cluster.local", fmt.Sprintf("127.0.0.1:%d", inPort))
		c.TransportSocket = tlsSocketOf(t, istioMutualUpstream(t, serverID))
		s.Clusters[c.Name] = c
		s.Listeners["out"] = realListener("out", port, &listener.FilterChain{Filters: []*listener.Filter{tcpNetFilter(t, c.Name)}})
		return s
	}
	for _, tc := range []struct {
		name   string
		port   uint32
		admits bool
	}{{"allowed identity", outPort, true}, {"other identity", out2Port, false}} {
		t.Run(tc.name, func(t *testing.T) {
			secrets := &testSecrets{cert: clientCert, pool: ca.pool}
			if !tc.admits {
				secrets.cert = strangerCert
			}
			client := newDP(t, Options{Engine: upstreamEngine{}, Secrets: secrets, Node: testNode("app", "default")})
			if err := client.Apply(clientSnap(tc.port)); err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tc.port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, "over mtls")
			b := make([]byte, 9)
			_, err = io.ReadFull(conn, b)
			if tc.admits && (err != nil || string(b) != "over mtls") {
				t.Fatalf("echo through two data planes: %q %v", b, err)
			}
			if !tc.admits && err == nil {
				t.Fatalf("network RBAC let %q through", b)
			}
		})
	}
	// The inbound side labels TCP metrics with the peer's identity.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found map[string]string
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "istio_tcp_connections_closed_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				found = l
			}
		}
		if found != nil {
			if found["reporter"] != "destination" || found["source_principal"] != clientID || found["source_workload_namespace"] != "default" ||
				found["connection_security_policy"] != "mutual_tls" || found["destination_principal"] != serverID || found["request_protocol"] != "tcp" {
				t.Errorf("inbound tcp labels %v", found)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no istio_tcp_connections_closed_total from the inbound side")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Plaintext straight to the STRICT inbound listener is refused.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", inPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "plaintext")
	if _, err := conn.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("strict listener did not close a plaintext connection: %v", err)
	}
}

// TestHTTPOverMutualTLSBetweenTwoDataplanes runs the real router and
// clusters on both sides: productpage's outbound HTTP listener originates
// ISTIO_MUTUAL to reviews' STRICT inbound listener; both report Istio
// metrics, the inbound side with the peer's identity.
func TestHTTPOverMutualTLSBetweenTwoDataplanes(t *testing.T) {
	ca := newTestCA(t)
	serverID := "spiffe://cluster.local/ns/bookinfo/sa/reviews"
	clientID := "spiffe://cluster.local/ns/bookinfo/sa/productpage"
	serverCert, _, _ := ca.issue(t, serverID)
	clientCert, _, _ := ca.issue(t, clientID)
	app := backend(t, "reviews-app")
	inPort, outPort := freePort(t), freePort(t)
	reg := prometheus.NewRegistry()

	server := newDP(t, Options{Engine: DefaultEngine{}, Registry: reg, Secrets: &testSecrets{cert: serverCert, pool: ca.pool}, Node: testNode("reviews", "bookinfo")})
	in := newSnap()
	in.Clusters["inbound|9080||"] = staticCluster("inbound|9080||", app)
	hc := &hcmv3.HttpConnectionManager{
		RouteSpecifier:           &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeTo("inbound|9080||", "inbound|9080||")},
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE_SET,
	}
	in.Listeners["in"] = realListener("in", inPort, &listener.FilterChain{
		FilterChainMatch: &listener.FilterChainMatch{TransportProtocol: "tls"},
		TransportSocket:  tlsSocketOf(t, istioMutual()),
		Filters:          []*listener.Filter{hcmNetFilter(t, hc, statsHTTPFilter(t, reporterInbound))},
	})
	if err := server.Apply(in); err != nil {
		t.Fatal(err)
	}

	client := newDP(t, Options{Engine: DefaultEngine{}, Registry: reg, Secrets: &testSecrets{cert: clientCert, pool: ca.pool}, Node: testNode("productpage", "bookinfo")})
	out := newSnap()
	c := staticCluster("outbound|9080||reviews.bookinfo.svc.cluster.local", fmt.Sprintf("127.0.0.1:%d", inPort))
	up := istioMutualUpstream(t, serverID)
	up.Sni = "outbound_.9080_._.reviews.bookinfo.svc.cluster.local"
	c.TransportSocket = tlsSocketOf(t, up)
	c.Metadata = istioServiceMetadata(t, "reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo")
	out.Clusters[c.Name] = c
	out.Routes["9080"] = routeTo("9080", c.Name)
	out.Listeners["out"] = realListener("out", outPort, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("9080"), statsHTTPFilter(t, reporterOutbound))}})
	if err := client.Apply(out); err != nil {
		t.Fatal(err)
	}

	resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/reviews/0", outPort))
	if resp.StatusCode != 200 || body != "reviews-app /reviews/0" {
		t.Fatalf("through two data planes: %d %q", resp.StatusCode, body)
	}
	if xfcc := resp.Header.Get("Echo-X-Forwarded-Client-Cert"); !strings.Contains(xfcc, "URI="+clientID) {
		t.Errorf("app saw x-forwarded-client-cert %q", xfcc)
	}
	mfs, _ := reg.Gather()
	series := map[string]map[string]string{}
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			series[l["reporter"]] = l
		}
	}
	dst := series["destination"]
	if dst["source_principal"] != clientID || dst["connection_security_policy"] != "mutual_tls" || dst["source_workload"] != "productpage" || dst["destination_workload"] != "reviews" {
		t.Errorf("destination reporter labels %v", dst)
	}
	src := series["source"]
	if src["destination_workload"] != "reviews" || src["destination_service"] != "reviews.bookinfo.svc.cluster.local" || src["response_code"] != "200" {
		t.Errorf("source reporter labels %v", src)
	}
}
