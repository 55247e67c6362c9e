package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func filterNames(fs []*hcm.HttpFilter) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Name)
	}
	return out
}

func TestSidecarRedirectListeners(t *testing.T) {
	r := Generate(bookinfo(), productpageProxy())
	validateAll(t, r)

	vo := findListener(r, VirtualOutboundListener)
	if vo == nil || !vo.GetUseOriginalDst().GetValue() || vo.GetAddress().GetSocketAddress().GetPortValue() != 15001 {
		t.Fatalf("virtualOutbound = %v", vo)
	}
	if c := mustTCPProxy(t, vo.FilterChains[0].Filters).GetCluster(); c != PassthroughCluster {
		t.Errorf("ALLOW_ANY catch-all goes to %s", c)
	}

	http := findListener(r, "0.0.0.0_9080")
	if http == nil || http.GetBindToPort() == nil || http.GetBindToPort().GetValue() {
		t.Fatalf("0.0.0.0_9080 must exist with bind_to_port false: %v", http)
	}
	m := mustHCM(t, http.FilterChains[0].Filters[0])
	if m.GetRds().GetRouteConfigName() != "9080" || m.GetRds().GetConfigSource().GetAds() == nil {
		t.Errorf("rds = %v", m.GetRds())
	}
	if got := filterNames(m.HttpFilters); !slices.Equal(got, []string{FilterFault, FilterCORS, FilterStats, FilterRouter}) {
		t.Errorf("outbound http filters = %v", got)
	}

	tcp := findListener(r, "10.96.0.14_27017")
	if tcp == nil {
		t.Fatal("TCP service listener on its VIP missing")
	}
	if c := mustTCPProxy(t, tcp.FilterChains[0].Filters).GetCluster(); c != "outbound|27017||mongodb.default.svc.cluster.local" {
		t.Errorf("tcp_proxy cluster = %s", c)
	}

	sniff := findListener(r, "10.96.0.15_7000")
	if sniff == nil || len(sniff.FilterChains) != 2 {
		t.Fatalf("UNSUPPORTED port needs two chains: %v", sniff)
	}
	if !slices.Equal(sniff.FilterChains[0].GetFilterChainMatch().GetApplicationProtocols(), []string{"http/1.1", "h2c"}) {
		t.Errorf("sniffed chain match = %v", sniff.FilterChains[0].GetFilterChainMatch())
	}
	if mustHCM(t, sniff.FilterChains[0].Filters[0]).GetRds().GetRouteConfigName() != "7000" {
		t.Errorf("sniffed HTTP must use route 7000")
	}
	if c := mustTCPProxy(t, sniff.FilterChains[1].Filters).GetCluster(); c != "outbound|7000||legacy.default.svc.cluster.local" {
		t.Errorf("sniffed TCP cluster = %s", c)
	}
	if findRoute(r, "7000") == nil {
		t.Errorf("route 7000 missing")
	}

	tlsL := findListener(r, "0.0.0.0_443")
	var sni [][]string
	for _, fc := range tlsL.GetFilterChains() {
		sni = append(sni, fc.GetFilterChainMatch().GetServerNames())
	}
	want := [][]string{{"*.wikipedia.org"}, {"en.wikipedia.org"}, {"httpbin.org"}, {"istio-ingressgateway.istio-system.svc.cluster.local"}, nil}
	slices.SortFunc(sni[:len(sni)-1], func(a, b []string) int { return slices.Compare(a, b) })
	if len(sni) != len(want) {
		t.Fatalf("TLS chains server_names = %v, want %v", sni, want)
	}
	for i := range want {
		if !slices.Equal(sni[i], want[i]) {
			t.Errorf("TLS chains server_names = %v, want %v", sni, want)
		}
	}

	vi := findListener(r, VirtualInboundListener)
	if vi.GetUseOriginalDst().GetValue() {
		t.Errorf("virtualInbound must not set use_original_dst")
	}
	if len(vi.FilterChains) != 3 {
		t.Fatalf("PERMISSIVE 9080 → mTLS + plaintext chains + passthrough, got %d chains", len(vi.FilterChains))
	}
	mtls, plain, pass := vi.FilterChains[0], vi.FilterChains[1], vi.FilterChains[2]
	if mtls.FilterChainMatch.GetTransportProtocol() != "tls" || mtls.FilterChainMatch.GetDestinationPort().GetValue() != 9080 || mtls.TransportSocket == nil ||
		!slices.Equal(mtls.FilterChainMatch.ApplicationProtocols, InboundALPN) {
		t.Errorf("mTLS chain = %v", mtls.FilterChainMatch)
	}
	if plain.FilterChainMatch.GetTransportProtocol() != "raw_buffer" || plain.TransportSocket != nil {
		t.Errorf("plaintext chain = %v", plain.FilterChainMatch)
	}
	in := mustHCM(t, plain.Filters[0])
	if in.GetRouteConfig().GetName() != "inbound|9080||" || in.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster() != "inbound|9080||" {
		t.Errorf("inbound route = %v", in.GetRouteConfig())
	}
	if c := mustTCPProxy(t, pass.Filters).GetCluster(); c != InboundPassthroughCluster || pass.FilterChainMatch != nil {
		t.Errorf("last chain must be the passthrough, got %s", c)
	}
}

func TestRegistryOnly(t *testing.T) {
	push := bookinfo()
	push.Mesh = &meshconfig.MeshConfig{OutboundTrafficPolicy: &meshconfig.MeshConfig_OutboundTrafficPolicy{Mode: meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY}}
	r := Generate(push, productpageProxy())
	if c := mustTCPProxy(t, findListener(r, VirtualOutboundListener).FilterChains[0].Filters).GetCluster(); c != BlackHoleCluster {
		t.Errorf("REGISTRY_ONLY catch-all goes to %s", c)
	}
	vhs := findRoute(r, "9080").VirtualHosts
	last := vhs[len(vhs)-1]
	if last.Name != "block_all" || last.Routes[0].GetDirectResponse().GetStatus() != 502 {
		t.Errorf("catch-all virtual host = %v", last)
	}
}

func TestSidecarNoneInterception(t *testing.T) {
	proxy := productpageProxy()
	proxy.InterceptionMode = model.InterceptionNone
	proxy.InboundBindAddress = "127.0.0.2"
	proxy.OutboundBindAddress = "127.0.0.3"
	proxy.AppAddress = "127.0.0.4"
	r := Generate(bookinfo(), proxy)
	validateAll(t, r)
	if findListener(r, VirtualInboundListener) != nil || findListener(r, VirtualOutboundListener) != nil {
		t.Errorf("NONE has no virtual listeners")
	}
	in := findListener(r, "127.0.0.2_9080")
	if in == nil || in.BindToPort != nil {
		t.Fatalf("inbound listener must bind 127.0.0.2:9080 for real: %v", in)
	}
	for _, fc := range in.FilterChains {
		if fc.FilterChainMatch.GetDestinationPort() != nil {
			t.Errorf("a bound inbound listener needs no port match")
		}
	}
	c := findCluster(r, "inbound|9080||")
	if sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.4" || sa.GetPortValue() != 9080 {
		t.Errorf("inbound cluster goes to %v, want APP_ADDRESS", sa)
	}
	out := findListener(r, "127.0.0.3_9080")
	if out == nil || out.BindToPort != nil {
		t.Fatalf("outbound listener must bind 127.0.0.3:9080: %v", out)
	}
	if tcp := findListener(r, "127.0.0.3_27017"); tcp == nil {
		t.Errorf("TCP services bind on the outbound address too")
	}
}

func TestInboundMTLSModesAndSecurityHooks(t *testing.T) {
	defer SetHooks(Hooks{})
	tests := []struct {
		mode       MTLSMode
		transports []string
	}{
		{MTLSStrict, []string{"tls", "tls"}},
		{MTLSPermissive, []string{"tls", "raw_buffer", ""}},
		{MTLSDisable, []string{"raw_buffer", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			asked := map[uint32]bool{}
			SetHooks(Hooks{
				InboundMTLSMode: func(_ *model.PushContext, _ *model.Proxy, port uint32) MTLSMode { asked[port] = true; return tc.mode },
				InboundHTTPFilters: func(_ *model.PushContext, _ *model.Proxy, port uint32) []*hcm.HttpFilter {
					return []*hcm.HttpFilter{{Name: "envoy.filters.http.rbac", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: statsTypedStruct("x")}}}
				},
			})
			r := Generate(bookinfo(), productpageProxy())
			validateAll(t, r)
			if !asked[9080] || !asked[0] {
				t.Errorf("mode asked for ports %v, want 9080 and 0 (passthrough)", asked)
			}
			var got []string
			for _, fc := range findListener(r, VirtualInboundListener).FilterChains {
				got = append(got, fc.GetFilterChainMatch().GetTransportProtocol())
			}
			if !slices.Equal(got, tc.transports) {
				t.Errorf("chains by transport = %v, want %v", got, tc.transports)
			}
			m := mustHCM(t, findListener(r, VirtualInboundListener).FilterChains[0].Filters[0])
			if names := filterNames(m.HttpFilters); !slices.Equal(names, []string{"envoy.filters.http.rbac", FilterFault, FilterCORS, FilterStats, FilterRouter}) {
				t.Errorf("inbound filters = %v", names)
			}
		})
	}
}

func (m MTLSMode) String() string {
	return map[MTLSMode]string{MTLSDisable: "DISABLE", MTLSPermissive: "PERMISSIVE", MTLSStrict: "STRICT"}[m]
}

func TestTCPRouteWeights(t *testing.T) {
	push := bookinfo()
	for i := range push.VirtualServices {
		if push.VirtualServices[i].Name == "mongo" {
			tr := push.VirtualServices[i].Spec.Tcp[0]
			tr.Route = append(tr.Route, tr.Route[0])
			tr.Route[0] = &networking.RouteDestination{Destination: dest("mongodb", "", 27017), Weight: 80}
			tr.Route[1] = &networking.RouteDestination{Destination: dest("db.internal", "", 3306), Weight: 20}
		}
	}
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	tp := mustTCPProxy(t, findListener(r, "10.96.0.14_27017").FilterChains[0].Filters)
	wc := tp.GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].Weight != 80 || wc[1].Name != "outbound|3306||db.internal" {
		t.Errorf("weighted clusters = %v", wc)
	}
}

func TestTCPIdleTimeoutFromDestinationRule(t *testing.T) {
	push := bookinfo()
	push.DestinationRules = append(push.DestinationRules, cfg(model.KindDestinationRule, "default", "mongo", 9, &networking.DestinationRule{
		Host: "mongodb",
		TrafficPolicy: &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{
			Tcp: &networking.ConnectionPoolSettings_TCPSettings{IdleTimeout: durationpb.New(5 * time.Minute)},
		}},
	}))
	r := Generate(push, productpageProxy())
	tp := mustTCPProxy(t, findListener(r, "10.96.0.14_27017").FilterChains[0].Filters)
	if tp.GetIdleTimeout().AsDuration() != 5*time.Minute {
		t.Errorf("idle_timeout = %v", tp.GetIdleTimeout())
	}
	if tp := mustTCPProxy(t, findListener(r, "10.96.0.15_7000").FilterChains[1].Filters); tp.GetIdleTimeout() != nil {
		t.Errorf("no DestinationRule keeps Envoy's default, got %v", tp.GetIdleTimeout())
	}
}

func TestNoneInboundOutboundCollision(t *testing.T) {
	proxy := productpageProxy()
	proxy.InterceptionMode = model.InterceptionNone
	proxy.InboundBindAddress, proxy.OutboundBindAddress = "127.0.0.1", "127.0.0.1"
	r := Generate(bookinfo(), proxy)
	validateAll(t, r)
	l := findListener(r, "127.0.0.1_9080")
	if l == nil || l.TrafficDirection.String() != "INBOUND" {
		t.Fatalf("the inbound listener must keep 127.0.0.1:9080: %v", l)
	}
	found := false
	for _, s := range r.Skipped {
		found = found || s.Name == "details" || s.Name == "productpage" || s.Name == "ratings" || s.Name == "reviews"
	}
	if !found {
		t.Errorf("collision not reported: %v", r.Skipped)
	}
}

// A port without a declared protocol is sniffed on the inbound side as in
// Istio: for each transport an HTTP chain and a TCP chain, mTLS ones told
// apart by the client sidecar's ALPN, plaintext ones by the HTTP
// inspector; the inbound cluster speaks what the client spoke.
func TestInboundSniffedPort(t *testing.T) {
	push := bookinfo()
	for _, svc := range push.Services {
		if svc.Name == "productpage" {
			svc.Ports = append(svc.Ports, model.Port{Port: 9000, Protocol: model.ProtocolUnsupported})
		}
	}
	r := Generate(push, productpageProxy())
	validateAll(t, r)
	vi := findListener(r, VirtualInboundListener)
	if names := func() (n []string) {
		for _, f := range vi.ListenerFilters {
			n = append(n, f.Name)
		}
		return
	}(); !slices.Equal(names, []string{FilterTLSInspect, FilterHTTPInspect}) {
		t.Errorf("virtualInbound listener filters %v, want the TLS and HTTP inspectors", names)
	}
	type chain struct {
		name, transport string
		alpn            []string
		http            bool
	}
	var got []chain
	for _, fc := range vi.FilterChains {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != 9000 {
			continue
		}
		m := fc.GetFilterChainMatch()
		got = append(got, chain{fc.Name, m.GetTransportProtocol(), m.GetApplicationProtocols(), fc.Filters[len(fc.Filters)-1].Name == FilterHCM})
	}
	want := []chain{
		{"inbound|9000||mtls-http", "tls", InboundHTTPALPN, true},
		{"inbound|9000||mtls-tcp", "tls", InboundTCPALPN, false},
		{"inbound|9000||plaintext-http", "raw_buffer", SniffedALPN, true},
		{"inbound|9000||plaintext-tcp", "raw_buffer", nil, false},
	}
	if len(got) != len(want) {
		t.Fatalf("port 9000 chains %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].name != want[i].name || got[i].transport != want[i].transport || !slices.Equal(got[i].alpn, want[i].alpn) || got[i].http != want[i].http {
			t.Errorf("chain %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// A declared HTTP port keeps one chain per transport, no inspector
	// needed for it.
	for _, fc := range vi.FilterChains {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == 9080 && strings.HasSuffix(fc.Name, "-tcp") {
			t.Errorf("HTTP port 9080 has a TCP chain %s", fc.Name)
		}
	}
	c := findCluster(r, "inbound|9000||")
	if c == nil {
		t.Fatal("no inbound cluster for port 9000")
	}
	opts := &upstreamhttp.HttpProtocolOptions{}
	if err := c.TypedExtensionProtocolOptions[HTTPProtocolOpts].UnmarshalTo(opts); err != nil || opts.GetUseDownstreamProtocolConfig() == nil {
		t.Errorf("inbound cluster of a sniffed port must use the downstream protocol: %v %v", opts, err)
	}
}
