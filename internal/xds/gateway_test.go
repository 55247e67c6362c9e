package xds

import (
	"slices"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func downstreamTLSOf(t *testing.T, ts *core.TransportSocket) *tls.DownstreamTlsContext {
	t.Helper()
	ctx := &tls.DownstreamTlsContext{}
	if ts == nil || ts.GetTypedConfig().UnmarshalTo(ctx) != nil {
		t.Fatalf("transport socket %v is not a DownstreamTlsContext", ts)
	}
	return ctx
}

func TestGatewayListeners(t *testing.T) {
	r := Generate(bookinfo(), ingressProxy())
	validateAll(t, r)
	var names []string
	for _, l := range r.Listeners {
		names = append(names, l.Name)
		if l.BindToPort != nil && !l.BindToPort.GetValue() {
			t.Errorf("%s: gateway listeners bind for real", l.Name)
		}
	}
	want := []string{"0.0.0.0_15443", "0.0.0.0_31400", "0.0.0.0_8000", "0.0.0.0_8080", "0.0.0.0_8443", "0.0.0.0_9443"}
	if !slices.Equal(names, want) {
		t.Errorf("listeners = %v, want %v (80→8080 and 443→8443 through the port map)", names, want)
	}

	http := mustHCM(t, findListener(r, "0.0.0.0_8080").FilterChains[0].Filters[0])
	if http.GetRds().GetRouteConfigName() != "http.8080" || !http.GetUseRemoteAddress().GetValue() {
		t.Errorf("http HCM = rds %q use_remote_address %v", http.GetRds().GetRouteConfigName(), http.GetUseRemoteAddress())
	}
	if got := filterNames(http.HttpFilters); !slices.Equal(got, []string{FilterFault, FilterCORS, FilterStats, FilterRouter}) {
		t.Errorf("gateway filters = %v", got)
	}

	simple := findListener(r, "0.0.0.0_8443").FilterChains[0]
	if !slices.Equal(simple.FilterChainMatch.GetServerNames(), []string{"bookinfo.example.com"}) {
		t.Errorf("SIMPLE server_names = %v", simple.FilterChainMatch.GetServerNames())
	}
	ctx := downstreamTLSOf(t, simple.TransportSocket)
	if ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != "kubernetes://bookinfo-cred" || ctx.GetRequireClientCertificate().GetValue() {
		t.Errorf("SIMPLE tls = %v", ctx)
	}
	if rds := mustHCM(t, simple.Filters[0]).GetRds().GetRouteConfigName(); rds != "https.443.https.bookinfo-gateway.default" {
		t.Errorf("https rds = %q", rds)
	}

	mutual := downstreamTLSOf(t, findListener(r, "0.0.0.0_9443").FilterChains[0].TransportSocket)
	if !mutual.GetRequireClientCertificate().GetValue() ||
		mutual.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "kubernetes://bookinfo-cred-cacert" {
		t.Errorf("MUTUAL tls = %v", mutual)
	}

	pass := findListener(r, "0.0.0.0_15443").FilterChains
	if len(pass) != 1 || !slices.Equal(pass[0].FilterChainMatch.GetServerNames(), []string{"en.wikipedia.org"}) || pass[0].TransportSocket != nil {
		t.Fatalf("PASSTHROUGH chains = %v", pass)
	}
	if c := mustTCPProxy(t, pass[0].Filters).GetCluster(); c != "outbound|443||*.wikipedia.org" {
		t.Errorf("PASSTHROUGH cluster = %s", c)
	}

	if c := mustTCPProxy(t, findListener(r, "0.0.0.0_31400").FilterChains[0].Filters).GetCluster(); c != "outbound|27017||mongodb.default.svc.cluster.local" {
		t.Errorf("TCP server cluster = %s", c)
	}

	var secrets []string
	for _, s := range r.Secrets {
		secrets = append(secrets, s.Name)
		if s.Name == "kubernetes://bookinfo-cred" && string(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()) != "CERT" {
			t.Errorf("credential must come from the gateway's namespace (istio-system)")
		}
	}
	if !slices.Equal(secrets, []string{"kubernetes://bookinfo-cred", "kubernetes://bookinfo-cred-cacert"}) {
		t.Errorf("secrets = %v", secrets)
	}
}

func TestGatewayRoutes(t *testing.T) {
	r := Generate(bookinfo(), ingressProxy())
	rc := findRoute(r, "http.8080")
	if rc == nil {
		t.Fatal("http.8080 missing")
	}
	star := findVHost(rc, "*:80")
	if star == nil || !slices.Equal(star.Domains, []string{"*"}) {
		t.Fatalf("virtual host for * = %v", star)
	}
	myapp := star.Routes[len(star.Routes)-1]
	if rr := myapp.GetRoute().GetRegexRewrite(); myapp.Match.GetPrefix() != "/myapp" || rr.GetPattern().GetRegex() != "^/myapp/*" || rr.GetSubstitution() != "/" {
		t.Errorf("/myapp route = %v", myapp)
	}
	wc := myapp.GetRoute().GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].Weight.GetValue() != 90 || wc[1].Name != "outbound|9080|v2|reviews.default.svc.cluster.local" {
		t.Errorf("90/10 split = %v", wc)
	}
	secure := findVHost(rc, "bookinfo.example.com:80")
	if secure == nil || secure.Routes[0].GetRedirect().GetPathRedirect() != "/new" || secure.Routes[1].GetDirectResponse().GetStatus() != 200 {
		t.Errorf("a VirtualService naming the host wins over the wildcard one: %v", secure)
	}
	redirect := findVHost(findRoute(r, "http.8000"), "bookinfo.example.com:8000")
	if redirect == nil || !redirect.Routes[0].GetRedirect().GetHttpsRedirect() {
		t.Errorf("httpsRedirect = %v", redirect)
	}
	if findRoute(r, "https.9443.https-mtls.bookinfo-gateway.default") == nil {
		t.Errorf("MUTUAL server route missing")
	}
}

func TestGatewayScoping(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(push *model.PushContext, proxy *model.Proxy)
		check  func(t *testing.T, r *Resources)
	}{
		{"selector not matching", func(_ *model.PushContext, p *model.Proxy) { p.Labels = map[string]string{"istio": "egressgateway"} }, func(t *testing.T, r *Resources) {
			if len(r.Listeners) != 0 {
				t.Errorf("no Gateway selects the proxy, got %d listeners", len(r.Listeners))
			}
		}},
		{"empty selector stays in its namespace", func(push *model.PushContext, _ *model.Proxy) { push.Gateways[0].Spec.Selector = nil }, func(t *testing.T, r *Resources) {
			if len(r.Listeners) != 0 {
				t.Errorf("a selector-less Gateway in default must not configure a gateway in istio-system")
			}
		}},
		{"credential only from the gateway's namespace", func(push *model.PushContext, p *model.Proxy) {
			delete(push.Credentials, "istio-system/bookinfo-cred")
		}, func(t *testing.T, r *Resources) {
			if findListener(r, "0.0.0.0_8443") != nil || len(r.Secrets) != 0 {
				t.Errorf("a credential from another namespace must not be used")
			}
			found := false
			for _, s := range r.Skipped {
				found = found || (s.Kind == "Gateway" && strings.Contains(s.Reason, "not found"))
			}
			if !found {
				t.Errorf("missing credential not reported: %v", r.Skipped)
			}
		}},
		{"server host namespace scopes VirtualServices", func(push *model.PushContext, _ *model.Proxy) {
			for i := range push.Gateways[0].Spec.Servers {
				s := push.Gateways[0].Spec.Servers[i]
				if s.Port.Number == 80 {
					s.Hosts = []string{"other/*"}
				}
			}
		}, func(t *testing.T, r *Resources) {
			if rc := findRoute(r, "http.8080"); len(rc.GetVirtualHosts()) != 0 {
				t.Errorf("VirtualServices of default must not bind to other/*: %v", rc.GetVirtualHosts())
			}
		}},
		{"gateway named with namespace", func(push *model.PushContext, _ *model.Proxy) {
			for i := range push.VirtualServices {
				if push.VirtualServices[i].Name == "bookinfo" {
					push.VirtualServices[i].Namespace = "apps"
					push.VirtualServices[i].Spec.Gateways = []string{"default/bookinfo-gateway"}
				}
			}
		}, func(t *testing.T, r *Resources) {
			if findVHost(findRoute(r, "http.8080"), "*:80") == nil {
				t.Errorf("a VirtualService naming ns/gateway binds across namespaces")
			}
		}},
		{"no port map uses the server port", func(_ *model.PushContext, p *model.Proxy) { p.GatewayPortMap = nil }, func(t *testing.T, r *Resources) {
			if findListener(r, "0.0.0.0_80") == nil || findRoute(r, "http.80") == nil {
				t.Errorf("listener 0.0.0.0_80 and route http.80 expected")
			}
		}},
		{"ISTIO_MUTUAL server", func(push *model.PushContext, _ *model.Proxy) {
			push.Gateways[0].Spec.Servers[1].Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_ISTIO_MUTUAL}
		}, func(t *testing.T, r *Resources) {
			ctx := downstreamTLSOf(t, findListener(r, "0.0.0.0_8443").FilterChains[0].TransportSocket)
			if ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != SecretDefault || !ctx.GetRequireClientCertificate().GetValue() {
				t.Errorf("ISTIO_MUTUAL uses the workload certificate: %v", ctx)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			push, proxy := bookinfo(), ingressProxy()
			tc.mutate(push, proxy)
			r := Generate(push, proxy)
			validateAll(t, r)
			tc.check(t, r)
		})
	}
}
