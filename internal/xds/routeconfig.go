package xds

import (
	"fmt"
	"net/netip"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func subnetsContain(subnets []string, ip string) bool {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, s := range subnets {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(addr) {
			return true
		}
		if a, err := netip.ParseAddr(s); err == nil && a == addr {
			return true
		}
	}
	return false
}

// serviceDomains are the Host header values that reach a service from the
// proxy, as Istio builds them: the FQDN, short forms the caller's DNS
// search path resolves (same namespace: "reviews"; any: "reviews.default",
// "reviews.default.svc"), and the VIPs. Each is listed bare only: the
// sidecar's route configurations set ignore_port_in_host_matching, so the
// proxy matches "reviews:9080" as "reviews", and the ":port" variants Istio
// adds would only double the size of every virtual host (a route
// configuration holds one per service on the port, and every proxy
// receives it again on every routing change).
func (g *gen) serviceDomains(svc *model.Service) []string {
	hosts := []string{svc.Hostname}
	suffix := ".svc." + g.push.DomainSuffix
	if g.push.DomainSuffix == "" {
		suffix = ".svc.cluster.local"
	}
	if svc.FromServiceEntry == "" && strings.HasSuffix(svc.Hostname, suffix) {
		nameNS := strings.TrimSuffix(svc.Hostname, suffix) // name.namespace
		if svc.Namespace == g.scope.proxyNS {
			hosts = append(hosts, svc.Name)
		}
		hosts = append(hosts, nameNS, nameNS+".svc")
	}
	return append(hosts, svc.Addresses...)
}

// sidecarRouteConfig is the RouteConfiguration "<port>" of a sidecar: a
// virtual host per visible HTTP service on the port, routed by its
// VirtualService or straight to the service, then the catch-all.
func (g *gen) sidecarRouteConfig(port uint32) *route.RouteConfiguration {
	rc := &route.RouteConfiguration{Name: portStr(port), ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true}
	used := map[string]bool{}
	seenHost := map[string]bool{}
	vss := g.boundVS(MeshGateway)
	for _, svc := range g.services {
		p, ok := svc.PortByNumber(port)
		if !ok || (!p.Protocol.IsHTTP() && p.Protocol != model.ProtocolUnsupported) || seenHost[svc.Hostname] ||
			!g.scope.allowsPort(svc.Namespace, svc.Hostname, port) {
			continue
		}
		seenHost[svc.Hostname] = true
		var domains []string
		for _, d := range g.serviceDomains(svc) {
			if !used[d] {
				used[d] = true
				domains = append(domains, d)
			}
		}
		if len(domains) == 0 {
			continue
		}
		vh := &route.VirtualHost{Name: svc.Hostname + ":" + portStr(port), Domains: domains}
		routed := false
		if vs := g.vsForHost(vss, svc.Hostname); vs != nil {
			g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
				vh.Routes, routed = g.httpRoutes(vs, routeCtx{gateway: MeshGateway, port: port})
			})
		}
		if !routed {
			vh.Routes = []*route.Route{g.defaultRoute(svc, port)}
		}
		if err := vh.ValidateAll(); err != nil {
			g.skip("Service", svc.Namespace, svc.Name, fmt.Sprintf("virtual host %s: %v", vh.Name, err))
			continue
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	// VirtualService hosts outside the registry (external names without a
	// ServiceEntry) get their own virtual host on every HTTP port, like
	// Istio does.
	for _, vs := range vss {
		for _, h := range g.hostsOf(vs) {
			if h == "*" || seenHost[h] || g.coversService(h) || !g.scope.allowsPort(vs.Namespace, h, port) {
				continue
			}
			seenHost[h] = true
			if used[h] {
				continue
			}
			used[h] = true
			vh := &route.VirtualHost{Name: h + ":" + portStr(port), Domains: []string{h}}
			routed := false
			g.guard(model.KindVirtualService, vs.Namespace, vs.Name, func() {
				vh.Routes, routed = g.httpRoutes(vs, routeCtx{gateway: MeshGateway, port: port})
			})
			if !routed || len(vh.Routes) == 0 {
				continue
			}
			if err := vh.ValidateAll(); err != nil {
				g.skip(string(model.KindVirtualService), vs.Namespace, vs.Name, fmt.Sprintf("host %q: %v", h, err))
				continue
			}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}
	}
	rc.VirtualHosts = append(rc.VirtualHosts, g.catchAllVirtualHost(used))
	return rc
}

// coversService reports whether a VirtualService host names or covers a
// visible service.
func (g *gen) coversService(host string) bool {
	if !hasWildcard(host) {
		return len(g.push.ServicesByHost(host)) > 0 && g.anyVisible(host)
	}
	for _, svc := range g.services {
		if hostMatches(host, svc.Hostname) {
			return true
		}
	}
	return false
}

func (g *gen) anyVisible(host string) bool {
	for _, s := range g.push.ServicesByHost(host) {
		if g.serviceVisible(s) {
			return true
		}
	}
	return false
}

// catchAllVirtualHost answers hosts outside the registry: passthrough with
// ALLOW_ANY, 502 with REGISTRY_ONLY.
func (g *gen) catchAllVirtualHost(used map[string]bool) *route.VirtualHost {
	if g.scope.registryOnly {
		return &route.VirtualHost{Name: "block_all", Domains: []string{"*"}, Routes: []*route.Route{{
			Name:   "block_all",
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{Status: 502}},
		}}}
	}
	return &route.VirtualHost{Name: "allow_any", Domains: []string{"*"}, Routes: []*route.Route{{
		Name:  "allow_any",
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: PassthroughCluster},
			Timeout:          durationpb.New(0),
		}},
	}}}
}
