package xds

import (
	"fmt"
	"sort"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// gwServer is one server of a Gateway selecting the proxy.
type gwServer struct {
	gw     *model.Config[*networking.Gateway]
	server *networking.Server
	target uint32
}

func (s gwServer) key() string { return s.gw.Namespace + "/" + s.gw.Name }

func (s gwServer) protocol() model.Protocol {
	return model.ParseProtocol(s.server.GetPort().GetProtocol())
}

// selectedServers are the servers of every Gateway whose selector matches
// the proxy's labels, in Gateway age order.
func (g *gen) selectedServers() map[uint32][]gwServer {
	out := map[uint32][]gwServer{}
	for i := range g.push.Gateways {
		gw := &g.push.Gateways[i]
		if gw.Spec == nil || !labelsMatch(gw.Spec.GetSelector(), g.proxy.Labels) {
			continue
		}
		if len(gw.Spec.GetSelector()) == 0 && gw.Namespace != g.proxy.Namespace {
			// without a selector a Gateway only takes its own namespace's gateways
			continue
		}
		for _, s := range gw.Spec.GetServers() {
			if s.GetPort() == nil || s.GetPort().GetNumber() == 0 {
				g.skip(string(model.KindGateway), gw.Namespace, gw.Name, "server without port")
				continue
			}
			target := s.GetPort().GetNumber()
			if t, ok := g.proxy.GatewayPortMap[target]; ok && t != 0 {
				target = t
			}
			out[target] = append(out[target], gwServer{gw: gw, server: s, target: target})
		}
	}
	return out
}

func (g *gen) buildGateway() {
	byPort := g.selectedServers()
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	for _, port := range ports {
		name := listenerName("0.0.0.0", port)
		l := &listener.Listener{Name: name, Address: socketAddress("0.0.0.0", port), TrafficDirection: core.TrafficDirection_OUTBOUND}
		statPrefix := "outbound_" + name
		usedMatch := map[string]bool{}
		add := func(s gwServer, ch *listener.FilterChain) {
			key := fmt.Sprint(ch.GetFilterChainMatch().GetServerNames(), ch.GetFilterChainMatch().GetTransportProtocol())
			if usedMatch[key] {
				g.skip(string(model.KindGateway), s.gw.Namespace, s.gw.Name, fmt.Sprintf("port %d: hosts %v are already served on this port", s.server.GetPort().GetNumber(), s.server.GetHosts()))
				return
			}
			usedMatch[key] = true
			l.FilterChains = append(l.FilterChains, ch)
		}
		var plain []gwServer
		for _, s := range byPort[port] {
			s := s
			g.guard(model.KindGateway, s.gw.Namespace, s.gw.Name, func() {
				proto := s.protocol()
				mode := s.server.GetTls().GetMode()
				switch {
				case proto.IsHTTP() || (proto == model.ProtocolHTTPS && s.server.GetTls() == nil):
					plain = append(plain, s)
				case proto == model.ProtocolHTTPS && mode != networking.ServerTLSSettings_PASSTHROUGH && mode != networking.ServerTLSSettings_AUTO_PASSTHROUGH:
					ctx, ok := g.serverTLS(s, true)
					if !ok {
						return
					}
					rdsName := httpsRouteName(s)
					g.routes[rdsName] = g.gatewayRouteConfig(rdsName, []gwServer{s})
					add(s, &listener.FilterChain{
						Name:             rdsName,
						FilterChainMatch: &listener.FilterChainMatch{ServerNames: serverNames(s.server.GetHosts())},
						TransportSocket:  &core.TransportSocket{Name: SocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}},
						Filters:          []*listener.Filter{g.httpConnectionManager(hcmOptions{statPrefix: statPrefix, rds: rdsName, withPolicy: true, policyPort: port, reporter: ReporterGateway})},
					})
					l.ListenerFilters = []*listener.ListenerFilter{tlsInspector()}
				case proto == model.ProtocolTLS || proto == model.ProtocolHTTPS:
					l.ListenerFilters = []*listener.ListenerFilter{tlsInspector()}
					if mode == networking.ServerTLSSettings_PASSTHROUGH || mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH {
						for _, vs := range g.boundVS(s.key()) {
							g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
								for _, ch := range g.vsTLSChains(vs, routeCtx{gateway: s.key(), port: s.server.GetPort().GetNumber()}, scopedHosts(s, vs.Namespace), statPrefix) {
									add(s, ch)
								}
							})
						}
						return
					}
					ctx, ok := g.serverTLS(s, false)
					if !ok {
						return
					}
					if dests := g.gatewayTCP(s); len(dests) > 0 {
						add(s, &listener.FilterChain{
							Name:             s.key() + "|" + portStr(s.server.GetPort().GetNumber()),
							FilterChainMatch: &listener.FilterChainMatch{ServerNames: serverNames(s.server.GetHosts())},
							TransportSocket:  &core.TransportSocket{Name: SocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}},
							Filters:          g.tcpFilters(statPrefix, dests, true, port, ReporterGateway),
						})
					}
				default: // TCP and unknown protocols route as TCP
					if dests := g.gatewayTCP(s); len(dests) > 0 {
						add(s, &listener.FilterChain{Name: s.key() + "|" + portStr(s.server.GetPort().GetNumber()), Filters: g.tcpFilters(statPrefix, dests, true, port, ReporterGateway)})
					}
				}
			})
		}
		if len(plain) > 0 {
			rdsName := "http." + portStr(port)
			g.routes[rdsName] = g.gatewayRouteConfig(rdsName, plain)
			add(plain[0], &listener.FilterChain{
				Name:    rdsName,
				Filters: []*listener.Filter{g.httpConnectionManager(hcmOptions{statPrefix: statPrefix, rds: rdsName, withPolicy: true, policyPort: port, reporter: ReporterGateway})},
			})
		}
		if len(l.FilterChains) > 0 {
			// chains with server names first, the catch-all last
			sort.SliceStable(l.FilterChains, func(i, j int) bool {
				return len(l.FilterChains[i].GetFilterChainMatch().GetServerNames()) > len(l.FilterChains[j].GetFilterChainMatch().GetServerNames())
			})
			g.listeners[name] = l
		}
	}
}

func httpsRouteName(s gwServer) string {
	name := s.server.GetName()
	if name == "" {
		name = s.server.GetPort().GetName()
	}
	return "https." + portStr(s.server.GetPort().GetNumber()) + "." + name + "." + s.gw.Name + "." + s.gw.Namespace
}

// serverNames are the SNI names of a server's hosts ("ns/" dropped); "*"
// means any name, so no SNI match.
func serverNames(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		h = trimNS(h)
		if h == "*" {
			return nil
		}
		out = append(out, h)
	}
	return uniqueSorted(out)
}

// scopedHosts are the server hosts a VirtualService of namespace vsNS may
// bind to ("ns/host": ns is "*", "." for the gateway's own, or a name).
func scopedHosts(s gwServer, vsNS string) []string {
	var out []string
	for _, h := range s.server.GetHosts() {
		ns, host, ok := strings.Cut(h, "/")
		if !ok {
			out = append(out, h)
			continue
		}
		if ns == "*" || ns == vsNS || (ns == "." && vsNS == s.gw.Namespace) {
			out = append(out, host)
		}
	}
	return out
}

// gatewayRouteConfig builds the virtual hosts of the VirtualServices bound
// to the servers; with httpsRedirect every host redirects to https.
func (g *gen) gatewayRouteConfig(name string, servers []gwServer) *route.RouteConfiguration {
	rc := &route.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true}
	used := map[string]bool{}
	for _, s := range servers {
		sport := s.server.GetPort().GetNumber()
		type vhostSrc struct {
			host string
			vs   *model.Config[*networking.VirtualService]
		}
		var hosts []vhostSrc
		for _, vs := range g.boundVS(s.key()) {
			allowed := scopedHosts(s, vs.Namespace)
			for _, h := range g.hostsOf(vs) {
				for _, sh := range allowed {
					if hostsIntersect(h, sh) {
						hosts = append(hosts, vhostSrc{moreSpecific(h, sh), vs})
					}
				}
			}
		}
		// a VirtualService naming the host itself beats one whose wildcard
		// only covers it
		sort.SliceStable(hosts, func(i, j int) bool {
			return hostNamed(hosts[i].vs, g, hosts[i].host) && !hostNamed(hosts[j].vs, g, hosts[j].host)
		})
		for _, hv := range hosts {
			if used[hv.host] {
				continue
			}
			used[hv.host] = true
			vh := &route.VirtualHost{Name: hv.host + ":" + portStr(sport), Domains: []string{hv.host}}
			if hv.host != "*" {
				vh.Domains = append(vh.Domains, hv.host+":"+portStr(sport))
			}
			if s.server.GetTls().GetHttpsRedirect() {
				vh.Routes = []*route.Route{{
					Name:   "https_redirect",
					Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
					Action: &route.Route_Redirect{Redirect: &route.RedirectAction{SchemeRewriteSpecifier: &route.RedirectAction_HttpsRedirect{HttpsRedirect: true}, ResponseCode: route.RedirectAction_MOVED_PERMANENTLY}},
				}}
			} else {
				vs := hv.vs
				g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
					vh.Routes, _ = g.httpRoutes(vs, routeCtx{gateway: s.key(), port: sport})
				})
				if len(vh.Routes) == 0 {
					continue
				}
			}
			if err := vh.ValidateAll(); err != nil {
				g.skip(string(model.KindVirtualService), hv.vs.Namespace, hv.vs.Name, fmt.Sprintf("host %q: %v", hv.host, err))
				continue
			}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}
	}
	return rc
}

// gatewayTCP picks the TCP route of a VirtualService bound to the server.
func (g *gen) gatewayTCP(s gwServer) []weightedCluster {
	for _, vs := range g.boundVS(s.key()) {
		var d []weightedCluster
		g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
			d = g.vsTCPDestinations(vs, routeCtx{gateway: s.key(), port: s.server.GetPort().GetNumber()}, "")
		})
		if len(d) > 0 {
			return d
		}
	}
	return nil
}

// serverTLS builds the DownstreamTlsContext of a terminating server.
func (g *gen) serverTLS(s gwServer, http bool) (*tls.DownstreamTlsContext, bool) {
	t := s.server.GetTls()
	if t == nil {
		g.skip(string(model.KindGateway), s.gw.Namespace, s.gw.Name, fmt.Sprintf("port %d: TLS server without tls settings", s.server.GetPort().GetNumber()))
		return nil, false
	}
	var alpn []string
	if http {
		alpn = []string{"h2", "http/1.1"}
	}
	if t.GetMode() == networking.ServerTLSSettings_ISTIO_MUTUAL {
		return hooks.InboundTLSContext(http), true
	}
	common := &tls.CommonTlsContext{AlpnProtocols: alpn}
	if v := t.GetMinProtocolVersion(); v != networking.ServerTLSSettings_TLS_AUTO {
		common.TlsParams = &tls.TlsParameters{TlsMinimumProtocolVersion: tls.TlsParameters_TlsProtocol(v)}
	}
	mutual := t.GetMode() == networking.ServerTLSSettings_MUTUAL || t.GetMode() == networking.ServerTLSSettings_OPTIONAL_MUTUAL
	switch cred := t.GetCredentialName(); {
	case cred != "":
		if !g.addCredential(cred, false) {
			g.skip(string(model.KindGateway), s.gw.Namespace, s.gw.Name, fmt.Sprintf("port %d: credential %q not found in namespace %s", s.server.GetPort().GetNumber(), cred, g.proxy.Namespace))
			return nil, false
		}
		common.TlsCertificateSdsSecretConfigs = []*tls.SdsSecretConfig{{Name: CredentialPrefix + cred, SdsConfig: adsSource()}}
		if mutual {
			if !g.addCredential(cred, true) {
				g.skip(string(model.KindGateway), s.gw.Namespace, s.gw.Name, fmt.Sprintf("port %d: credential %q has no CA certificate for MUTUAL", s.server.GetPort().GetNumber(), cred))
				return nil, false
			}
			v := &tls.CertificateValidationContext{MatchTypedSubjectAltNames: sanMatchers(tls.SubjectAltNameMatcher_DNS, t.GetSubjectAltNames())}
			common.ValidationContextType = &tls.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tls.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         v,
				ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: CredentialPrefix + cred + "-cacert", SdsConfig: adsSource()},
			}}
		}
	case t.GetServerCertificate() != "" && t.GetPrivateKey() != "":
		common.TlsCertificates = []*tls.TlsCertificate{{
			CertificateChain: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: t.GetServerCertificate()}},
			PrivateKey:       &core.DataSource{Specifier: &core.DataSource_Filename{Filename: t.GetPrivateKey()}},
		}}
		if mutual && t.GetCaCertificates() != "" {
			common.ValidationContextType = &tls.CommonTlsContext_ValidationContext{ValidationContext: &tls.CertificateValidationContext{
				TrustedCa: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: t.GetCaCertificates()}},
			}}
		}
	default:
		g.skip(string(model.KindGateway), s.gw.Namespace, s.gw.Name, fmt.Sprintf("port %d: TLS server needs credentialName or serverCertificate and privateKey", s.server.GetPort().GetNumber()))
		return nil, false
	}
	ctx := &tls.DownstreamTlsContext{CommonTlsContext: common}
	if t.GetMode() == networking.ServerTLSSettings_MUTUAL {
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	return ctx, true
}

// addCredential adds the Secret for a credentialName (the key pair, or
// with cacert its CA bundle) when the Secret is in the gateway's namespace.
func (g *gen) addCredential(cred string, cacert bool) bool {
	ns, name := g.proxy.Namespace, cred
	if n, nm, ok := strings.Cut(cred, "/"); ok {
		if n != g.proxy.Namespace {
			return false
		}
		name = nm
	}
	c := g.push.Credentials[ns+"/"+name]
	if c == nil {
		return false
	}
	if cacert {
		if len(c.CACert) == 0 {
			return false
		}
		secretName := CredentialPrefix + cred + "-cacert"
		g.secrets[secretName] = &tls.Secret{Name: secretName, Type: &tls.Secret_ValidationContext{ValidationContext: &tls.CertificateValidationContext{
			TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: append([]byte(nil), c.CACert...)}},
		}}}
		return true
	}
	if len(c.CertChain) == 0 || len(c.PrivateKey) == 0 {
		return false
	}
	secretName := CredentialPrefix + cred
	g.secrets[secretName] = &tls.Secret{Name: secretName, Type: &tls.Secret_TlsCertificate{TlsCertificate: &tls.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: append([]byte(nil), c.CertChain...)}},
		PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: append([]byte(nil), c.PrivateKey...)}},
	}}}
	return true
}

func hostNamed(vs *model.Config[*networking.VirtualService], g *gen, host string) bool {
	for _, h := range g.hostsOf(vs) {
		if h == host {
			return true
		}
	}
	return false
}
