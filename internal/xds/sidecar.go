package xds

import (
	"fmt"
	"slices"
	"sort"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// InboundALPN are the application protocols of mesh mTLS connections that
// select an inbound mTLS chain: InboundHTTPALPN are those a client's
// sidecar offers first on HTTP connections, which select the HTTP chain
// of a port whose protocol is sniffed; the others its TCP chain.
var (
	InboundTCPALPN  = []string{"istio-peer-exchange", "istio"}
	InboundHTTPALPN = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}
	InboundALPN     = slices.Concat(InboundTCPALPN, InboundHTTPALPN)
)

// SniffedALPN are what the HTTP inspector reports for plaintext HTTP.
var SniffedALPN = []string{"http/1.1", "h2c"}

func tlsInspector() *listener.ListenerFilter {
	return &listener.ListenerFilter{Name: FilterTLSInspect, ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspector.TlsInspector{})}}
}

func httpInspector() *listener.ListenerFilter {
	return &listener.ListenerFilter{Name: FilterHTTPInspect, ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspector.HttpInspector{})}}
}

// inboundPort is one port the proxy's workload serves.
type inboundPort struct {
	port     uint32 // the workload's port (target port)
	protocol model.Protocol
	svc      *model.Service
}

// inboundPorts are the target ports of the services in the proxy's
// namespace whose selector matches its labels, one per port (first
// service by hostname wins).
func (g *gen) inboundPorts() []inboundPort {
	seen := map[uint32]bool{}
	var out []inboundPort
	ips := map[string]bool{}
	for _, ip := range g.proxy.IPs {
		ips[ip] = true
	}
	for _, svc := range g.push.Services {
		if svc == nil || svc.Namespace != g.proxy.Namespace || len(svc.Selector) == 0 || !labelsMatch(svc.Selector, g.proxy.Labels) {
			continue
		}
		for _, p := range svc.Ports {
			target := p.TargetPort
			for _, ep := range g.push.EndpointsOf(svc) {
				if ep != nil && ips[ep.Address] && ep.ServicePort == p.Port && ep.Port != 0 {
					target = ep.Port
					break
				}
			}
			if target == 0 {
				target = p.Port
			}
			if seen[target] {
				continue
			}
			seen[target] = true
			out = append(out, inboundPort{port: target, protocol: p.Protocol, svc: svc})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].port < out[j].port })
	return out
}

func (g *gen) appAddress() string {
	if g.proxy.AppAddress != "" {
		return g.proxy.AppAddress
	}
	return "127.0.0.1"
}

func (g *gen) buildInboundClusters() {
	for _, ip := range g.inboundPorts() {
		name := ClusterName(Inbound, ip.port, "", "")
		c := &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
			ConnectTimeout:       g.connectTimeout(),
			LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(g.appAddress(), ip.port)}}}},
			}}},
			CircuitBreakers: circuitBreakers(nil),
			Metadata:        clusterMetadata(ip.svc, "", ip.port),
		}
		if opts := httpProtocolOptions(ip.protocol, nil); opts != nil {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOpts: mustAny(opts)}
		}
		g.clusters[name] = c
	}
}

// inboundChains are the filter chains of one inbound port: mTLS and/or
// plaintext as PeerAuthentication decides. A port whose protocol the
// Service does not declare is sniffed, as Istio does: HTTP and TCP chains
// for each transport, mTLS ones told apart by the ALPN the client's
// sidecar offers (InboundHTTPALPN for HTTP), plaintext ones by the HTTP
// inspector (SniffedALPN).
func (g *gen) inboundChains(ip inboundPort, matchPort bool) []*listener.FilterChain {
	mode := hooks.InboundMTLSMode(g.push, g.proxy, ip.port)
	clusterName := ClusterName(Inbound, ip.port, "", "")
	filters := func(http bool) []*listener.Filter {
		if http {
			rc := &route.RouteConfiguration{
				Name:             clusterName,
				ValidateClusters: wrapperspb.Bool(false),
				VirtualHosts: []*route.VirtualHost{{
					Name:    "inbound|http|" + portStr(ip.port),
					Domains: []string{"*"},
					Routes: []*route.Route{{
						Name:  "default",
						Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
						Action: &route.Route_Route{Route: &route.RouteAction{
							ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName},
							Timeout:          durationpb.New(0),
						}},
						Decorator: &route.Decorator{Operation: ip.svc.Hostname + ":" + portStr(ip.port) + "/*"},
					}},
				}},
			}
			return []*listener.Filter{g.httpConnectionManager(hcmOptions{
				statPrefix: "inbound_0.0.0.0_" + portStr(ip.port), routeConfig: rc,
				withPolicy: true, policyPort: ip.port, reporter: ReporterInbound,
			})}
		}
		return g.tcpFilters(clusterName, []weightedCluster{{name: clusterName, weight: 1}}, true, ip.port, ReporterInbound)
	}
	match := func(transport string, alpn []string) *listener.FilterChainMatch {
		m := &listener.FilterChainMatch{TransportProtocol: transport, ApplicationProtocols: alpn}
		if matchPort {
			m.DestinationPort = wrapperspb.UInt32(ip.port)
		}
		return m
	}
	type variant struct {
		suffix          string
		http            bool
		mtlsALPN, plain []string
	}
	variants := []variant{{"", ip.protocol.IsHTTP(), InboundALPN, nil}}
	if ip.protocol == model.ProtocolUnsupported {
		variants = []variant{{"-http", true, InboundHTTPALPN, SniffedALPN}, {"-tcp", false, InboundTCPALPN, nil}}
	}
	var chains []*listener.FilterChain
	if mode.acceptsMTLS() {
		for _, v := range variants {
			ctx := hooks.InboundTLSContext(v.http)
			chains = append(chains, &listener.FilterChain{
				Name:             clusterName + "mtls" + v.suffix,
				FilterChainMatch: match("tls", v.mtlsALPN),
				TransportSocket:  &core.TransportSocket{Name: SocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}},
				Filters:          filters(v.http),
			})
		}
	}
	if mode.acceptsPlaintext() {
		for _, v := range variants {
			chains = append(chains, &listener.FilterChain{
				Name:             clusterName + "plaintext" + v.suffix,
				FilterChainMatch: match("raw_buffer", v.plain),
				Filters:          filters(v.http),
			})
		}
	}
	return chains
}

// inboundListenerFilters inspect TLS and, when a port is sniffed, HTTP.
func inboundListenerFilters(ports []inboundPort) []*listener.ListenerFilter {
	for _, ip := range ports {
		if ip.protocol == model.ProtocolUnsupported {
			return []*listener.ListenerFilter{tlsInspector(), httpInspector()}
		}
	}
	return []*listener.ListenerFilter{tlsInspector()}
}

func (g *gen) buildSidecarListeners() {
	none := g.proxy.InterceptionMode == model.InterceptionNone
	if !none {
		g.listeners[VirtualOutboundListener] = &listener.Listener{
			Name:             VirtualOutboundListener,
			Address:          socketAddress("0.0.0.0", VirtualOutboundPort),
			UseOriginalDst:   wrapperspb.Bool(true),
			TrafficDirection: core.TrafficDirection_OUTBOUND,
			FilterChains: []*listener.FilterChain{{
				Name:    "virtualOutbound-catchall-tcp",
				Filters: g.tcpFilters(g.catchAllCluster(), []weightedCluster{{name: g.catchAllCluster(), weight: 1}}, false, 0, ReporterOutbound),
			}},
		}
		ports := g.inboundPorts()
		vi := &listener.Listener{
			Name:             VirtualInboundListener,
			Address:          socketAddress("0.0.0.0", VirtualInboundPort),
			TrafficDirection: core.TrafficDirection_INBOUND,
			ListenerFilters:  inboundListenerFilters(ports),
		}
		for _, ip := range ports {
			vi.FilterChains = append(vi.FilterChains, g.inboundChains(ip, true)...)
		}
		passthrough := &listener.FilterChain{
			Name:    "inbound-passthrough",
			Filters: g.tcpFilters(InboundPassthroughCluster, []weightedCluster{{name: InboundPassthroughCluster, weight: 1}}, true, 0, ReporterInbound),
		}
		if hooks.InboundMTLSMode(g.push, g.proxy, 0) == MTLSStrict {
			// STRICT (workload or wider): ports no service declares also
			// take mutual TLS only.
			passthrough.FilterChainMatch = &listener.FilterChainMatch{TransportProtocol: "tls", ApplicationProtocols: InboundALPN}
			passthrough.TransportSocket = &core.TransportSocket{Name: SocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(hooks.InboundTLSContext(false))}}
		}
		vi.FilterChains = append(vi.FilterChains, passthrough)
		g.listeners[VirtualInboundListener] = vi
	} else {
		bind := g.proxy.InboundBindAddress
		if bind == "" && len(g.proxy.IPs) > 0 {
			bind = g.proxy.IPs[0]
		}
		if bind == "" {
			bind = "0.0.0.0"
		}
		for _, ip := range g.inboundPorts() {
			name := listenerName(bind, ip.port)
			g.listeners[name] = &listener.Listener{
				Name:             name,
				Address:          socketAddress(bind, ip.port),
				TrafficDirection: core.TrafficDirection_INBOUND,
				ListenerFilters:  inboundListenerFilters([]inboundPort{ip}),
				FilterChains:     g.inboundChains(ip, false),
			}
		}
	}
	g.buildOutbound(none)
}

func (g *gen) catchAllCluster() string {
	if g.scope.registryOnly {
		return BlackHoleCluster
	}
	return PassthroughCluster
}

// outKind is how an outbound listener routes.
type outKind int

const (
	outHTTP outKind = iota
	outTCP
	outTLS
	outSniff
)

type outListener struct {
	ip       string
	port     uint32
	kind     outKind
	services []*model.Service
}

func kindOf(p model.Protocol) outKind {
	switch {
	case p.IsHTTP():
		return outHTTP
	case p == model.ProtocolTLS || p == model.ProtocolHTTPS:
		return outTLS
	case p == model.ProtocolUnsupported:
		return outSniff
	}
	return outTCP
}

func (g *gen) buildOutbound(none bool) {
	bind := "0.0.0.0"
	if none {
		bind = g.proxy.OutboundBindAddress
		if bind == "" {
			bind = "127.0.0.1"
		}
	}
	outs := map[string]*outListener{}
	httpPorts := map[uint32]bool{}
	for _, svc := range g.services {
		for _, p := range svc.Ports {
			if !g.scope.allowsPort(svc.Namespace, svc.Hostname, p.Port) {
				continue
			}
			kind := kindOf(p.Protocol)
			ip := bind
			if !none && (kind == outTCP || kind == outSniff) && len(svc.Addresses) > 0 {
				ip = svc.Addresses[0]
			}
			name := listenerName(ip, p.Port)
			ol := outs[name]
			if ol == nil {
				ol = &outListener{ip: ip, port: p.Port, kind: kind}
				outs[name] = ol
			}
			if ol.kind != kind {
				g.skip("Service", svc.Namespace, svc.Name, fmt.Sprintf("port %d: listener %s already serves another protocol", p.Port, name))
				continue
			}
			ol.services = append(ol.services, svc)
			if kind == outHTTP || kind == outSniff {
				httpPorts[p.Port] = true
			}
		}
	}
	for name, ol := range outs {
		if _, taken := g.listeners[name]; taken {
			// NONE with INBOUND and OUTBOUND bind addresses equal: the
			// inbound listener keeps the address
			svc := ol.services[0]
			g.skip("Service", svc.Namespace, svc.Name, fmt.Sprintf("port %d: outbound listener %s collides with an inbound listener", ol.port, name))
			continue
		}
		l := &listener.Listener{
			Name:             name,
			Address:          socketAddress(ol.ip, ol.port),
			TrafficDirection: core.TrafficDirection_OUTBOUND,
		}
		if !none {
			l.BindToPort = wrapperspb.Bool(false)
		}
		statPrefix := "outbound_" + name
		switch ol.kind {
		case outHTTP:
			l.FilterChains = []*listener.FilterChain{{Name: name, Filters: []*listener.Filter{g.httpConnectionManager(hcmOptions{statPrefix: statPrefix, rds: portStr(ol.port), reporter: ReporterOutbound})}}}
		case outTCP:
			svc := ol.services[0]
			l.FilterChains = []*listener.FilterChain{{Name: name, Filters: g.tcpFilters(statPrefix, g.tcpDestinations(svc, ol.port, ol.ip), false, 0, ReporterOutbound)}}
		case outSniff:
			svc := ol.services[0]
			l.ListenerFilters = []*listener.ListenerFilter{tlsInspector(), httpInspector()}
			l.FilterChains = []*listener.FilterChain{
				{
					Name:             name + "-http",
					FilterChainMatch: &listener.FilterChainMatch{ApplicationProtocols: SniffedALPN},
					Filters:          []*listener.Filter{g.httpConnectionManager(hcmOptions{statPrefix: statPrefix, rds: portStr(ol.port), reporter: ReporterOutbound})},
				},
				{Name: name + "-tcp", Filters: g.tcpFilters(statPrefix, g.tcpDestinations(svc, ol.port, ol.ip), false, 0, ReporterOutbound)},
			}
		case outTLS:
			l.ListenerFilters = []*listener.ListenerFilter{tlsInspector()}
			used := map[string]bool{}
			for _, svc := range ol.services {
				for _, ch := range g.tlsChains(svc, ol.port, MeshGateway, statPrefix) {
					key := fmt.Sprint(ch.FilterChainMatch.GetServerNames())
					if used[key] {
						continue
					}
					used[key] = true
					l.FilterChains = append(l.FilterChains, ch)
				}
			}
			l.FilterChains = append(l.FilterChains, &listener.FilterChain{
				Name:    name + "-catchall",
				Filters: g.tcpFilters(statPrefix, []weightedCluster{{name: g.catchAllCluster(), weight: 1}}, false, 0, ReporterOutbound),
			})
		}
		g.listeners[name] = l
	}
	for port := range httpPorts {
		g.routes[portStr(port)] = g.sidecarRouteConfig(port)
	}
}

// tlsChains are the SNI filter chains for a TLS service: the TLS routes of
// its VirtualService, then its own hostname to its cluster.
func (g *gen) tlsChains(svc *model.Service, port uint32, gateway, statPrefix string) []*listener.FilterChain {
	var chains []*listener.FilterChain
	if vs := g.vsForHost(g.boundVS(gateway), svc.Hostname); vs != nil {
		g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
			chains = append(chains, g.vsTLSChains(vs, routeCtx{gateway: gateway, port: port}, nil, statPrefix)...)
		})
	}
	return append(chains, &listener.FilterChain{
		Name:             "outbound|" + portStr(port) + "||" + svc.Hostname,
		FilterChainMatch: &listener.FilterChainMatch{ServerNames: []string{svc.Hostname}},
		Filters:          g.tcpFilters(statPrefix, []weightedCluster{{name: ClusterName(Outbound, port, "", svc.Hostname), weight: 1}}, false, 0, ReporterOutbound),
	})
}

func hasWildcard(h string) bool { return len(h) > 0 && h[0] == '*' }

// vsTLSChains turns the TLS routes of a VirtualService into SNI chains;
// serverHosts, when set, limits the SNI names (gateway server hosts).
func (g *gen) vsTLSChains(vs *model.Config[*networking.VirtualService], ctx routeCtx, serverHosts []string, statPrefix string) []*listener.FilterChain {
	var chains []*listener.FilterChain
	vsGWs := vsGateways(vs.Spec.GetGateways(), vs.Namespace)
	reporter := ReporterOutbound
	if ctx.gateway != MeshGateway {
		reporter = ReporterGateway
	}
	for _, tr := range vs.Spec.GetTls() {
		for _, m := range tr.GetMatch() {
			gws := vsGWs
			if len(m.GetGateways()) > 0 {
				gws = vsGateways(m.GetGateways(), vs.Namespace)
			}
			if !contains(gws, ctx.gateway) || (m.GetPort() != 0 && m.GetPort() != ctx.port) || !labelsMatch(m.GetSourceLabels(), g.proxy.Labels) {
				continue
			}
			var snis []string
			for _, h := range m.GetSniHosts() {
				h = g.fqdn(h, vs.Namespace)
				if serverHosts == nil {
					snis = append(snis, h)
					continue
				}
				for _, sh := range serverHosts {
					if hostsIntersect(sh, h) {
						snis = append(snis, moreSpecific(sh, h))
					}
				}
			}
			snis = uniqueSorted(snis)
			if len(snis) == 0 {
				continue
			}
			dests := g.l4Destinations(vs, tr.GetRoute(), ctx.port)
			if len(dests) == 0 {
				continue
			}
			chains = append(chains, &listener.FilterChain{
				Name:             vs.Namespace + "/" + vs.Name,
				FilterChainMatch: &listener.FilterChainMatch{ServerNames: snis},
				Filters:          g.tcpFilters(statPrefix, dests, false, 0, reporter),
			})
		}
	}
	return chains
}

// l4Destinations resolves TCP/TLS route destinations to weighted clusters.
func (g *gen) l4Destinations(vs *model.Config[*networking.VirtualService], rds []*networking.RouteDestination, port uint32) []weightedCluster {
	var out []weightedCluster
	for _, d := range rds {
		if d.GetDestination().GetHost() == "" {
			continue
		}
		name, _, _ := g.destination(d.GetDestination(), vs.Namespace, port)
		w := d.GetWeight()
		if len(rds) > 1 && w <= 0 {
			continue
		}
		if w <= 0 {
			w = 1
		}
		out = append(out, weightedCluster{name: name, weight: uint32(w)})
	}
	return out
}

// tcpDestinations picks the TCP route of the service's VirtualService that
// applies (port, sourceLabels, destinationSubnets), else the service.
func (g *gen) tcpDestinations(svc *model.Service, port uint32, vip string) []weightedCluster {
	def := []weightedCluster{{name: ClusterName(Outbound, port, "", svc.Hostname), weight: 1}}
	vs := g.vsForHost(g.boundVS(MeshGateway), svc.Hostname)
	if vs == nil {
		return def
	}
	var out []weightedCluster
	g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
		out = g.vsTCPDestinations(vs, routeCtx{gateway: MeshGateway, port: port}, vip)
	})
	if len(out) == 0 {
		return def
	}
	return out
}

func (g *gen) vsTCPDestinations(vs *model.Config[*networking.VirtualService], ctx routeCtx, vip string) []weightedCluster {
	vsGWs := vsGateways(vs.Spec.GetGateways(), vs.Namespace)
	for _, tr := range vs.Spec.GetTcp() {
		matches := tr.GetMatch()
		if len(matches) == 0 {
			matches = []*networking.L4MatchAttributes{nil}
		}
		for _, m := range matches {
			gws := vsGWs
			if len(m.GetGateways()) > 0 {
				gws = vsGateways(m.GetGateways(), vs.Namespace)
			}
			if !contains(gws, ctx.gateway) || (m.GetPort() != 0 && m.GetPort() != ctx.port) || !labelsMatch(m.GetSourceLabels(), g.proxy.Labels) {
				continue
			}
			if subnets := m.GetDestinationSubnets(); len(subnets) > 0 && !subnetsContain(subnets, vip) {
				continue
			}
			if d := g.l4Destinations(vs, tr.GetRoute(), ctx.port); len(d) > 0 {
				return d
			}
		}
	}
	return nil
}
