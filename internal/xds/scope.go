package xds

import (
	"strings"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// exported reports whether an object of namespace objNS with the given
// exportTo (or the mesh default when empty) is visible from namespace ns.
func exported(exportTo, defaults []string, objNS, ns string) bool {
	if len(exportTo) == 0 {
		exportTo = defaults
	}
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if objNS == ns {
				return true
			}
		case "~":
		default:
			if e == ns {
				return true
			}
		}
	}
	return false
}

// egressHost is one "namespace/host" entry of a Sidecar egress listener;
// port is the listener's port (0: every port).
type egressHost struct {
	ns, host string
	port     uint32
}

func parseEgressHost(s string) (egressHost, bool) {
	ns, host, ok := strings.Cut(s, "/")
	if !ok || ns == "" || host == "" {
		return egressHost{}, false
	}
	return egressHost{ns: ns, host: host}, true
}

// scope is what one proxy may see: Istio's exportTo and Sidecar rules.
type scope struct {
	proxyNS string
	// egress is nil when no Sidecar applies (everything exported is
	// visible).
	egress  []egressHost
	sidecar *model.Config[*networking.Sidecar]
	// registryOnly is outboundTrafficPolicy REGISTRY_ONLY.
	registryOnly bool
}

// sidecarFor picks the Sidecar applying to a proxy: one in its namespace
// whose workloadSelector matches, else its namespace's selector-less one,
// else the root namespace's selector-less one (oldest first on conflicts).
func sidecarFor(push *model.PushContext, proxy *model.Proxy) *model.Config[*networking.Sidecar] {
	ns := configNamespace(proxy)
	var nsDefault, rootDefault *model.Config[*networking.Sidecar]
	for i := range push.Sidecars {
		sc := &push.Sidecars[i]
		if sc.Spec == nil {
			continue
		}
		sel := sc.Spec.GetWorkloadSelector().GetLabels()
		switch {
		case sc.Namespace == ns && len(sel) > 0:
			if labelsMatch(sel, proxy.Labels) {
				return sc
			}
		case sc.Namespace == ns && nsDefault == nil:
			nsDefault = sc
		case sc.Namespace == push.RootNamespace && len(sel) == 0 && rootDefault == nil:
			rootDefault = sc
		}
	}
	if nsDefault != nil {
		return nsDefault
	}
	return rootDefault
}

func configNamespace(proxy *model.Proxy) string {
	if proxy.ConfigNamespace != "" {
		return proxy.ConfigNamespace
	}
	return proxy.Namespace
}

func newScope(push *model.PushContext, proxy *model.Proxy) *scope {
	s := &scope{proxyNS: configNamespace(proxy)}
	// REGISTRY_ONLY is the enum's zero value: an absent policy is ALLOW_ANY.
	if p := push.Mesh.GetOutboundTrafficPolicy(); p != nil && p.GetMode() == meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY {
		s.registryOnly = true
	}
	if proxy.Type == model.Router {
		return s
	}
	sc := sidecarFor(push, proxy)
	if sc == nil {
		return s
	}
	s.sidecar = sc
	if p := sc.Spec.GetOutboundTrafficPolicy(); p != nil {
		s.registryOnly = p.GetMode() == networking.OutboundTrafficPolicy_REGISTRY_ONLY
	}
	if len(sc.Spec.GetEgress()) > 0 {
		s.egress = []egressHost{}
		for _, l := range sc.Spec.GetEgress() {
			for _, h := range l.GetHosts() {
				if eh, ok := parseEgressHost(h); ok {
					eh.port = l.GetPort().GetNumber()
					if eh.ns == "." {
						// the proxy's namespace, also for the root
						// namespace's mesh-wide default
						eh.ns = s.proxyNS
					}
					s.egress = append(s.egress, eh)
				}
			}
		}
	}
	return s
}

// allows reports whether the Sidecar egress lets the proxy see host (a
// pattern) defined in namespace ns.
func (s *scope) allows(ns, host string) bool { return s.allowsPort(ns, host, 0) }

// allowsPort is allows for one port: an egress listener with a port only
// exposes its hosts on that port (port 0 asks about any port).
func (s *scope) allowsPort(ns, host string, port uint32) bool {
	if s.egress == nil {
		return true
	}
	for _, e := range s.egress {
		if port != 0 && e.port != 0 && e.port != port {
			continue
		}
		if e.ns == "~" {
			continue
		}
		if e.ns != "*" && e.ns != ns {
			continue
		}
		if hostsIntersect(e.host, host) {
			return true
		}
	}
	return false
}

func (g *gen) serviceVisible(svc *model.Service) bool {
	if !exported(svc.ExportTo, g.push.Mesh.GetDefaultServiceExportTo(), svc.Namespace, g.scope.proxyNS) {
		return false
	}
	return g.scope.allows(svc.Namespace, svc.Hostname)
}

func (g *gen) vsVisible(vs *model.Config[*networking.VirtualService]) bool {
	if !exported(vs.Spec.GetExportTo(), g.push.Mesh.GetDefaultVirtualServiceExportTo(), vs.Namespace, g.scope.proxyNS) {
		return false
	}
	for _, h := range vs.Spec.GetHosts() {
		if g.scope.allows(vs.Namespace, g.fqdn(h, vs.Namespace)) {
			return true
		}
	}
	return false
}

func (g *gen) drVisible(dr *model.Config[*networking.DestinationRule]) bool {
	if dr.Namespace == g.scope.proxyNS {
		return true
	}
	return exported(dr.Spec.GetExportTo(), g.push.Mesh.GetDefaultDestinationRuleExportTo(), dr.Namespace, g.scope.proxyNS)
}

// fqdn expands a short host of an Istio object in namespace ns
// ("reviews" → "reviews.ns.svc.cluster.local"); hosts with a dot, and
// wildcards, are kept.
func (g *gen) fqdn(host, ns string) string {
	if host == "" || host == "*" || strings.Contains(host, ".") {
		return host
	}
	suffix := g.push.DomainSuffix
	if suffix == "" {
		suffix = "cluster.local"
	}
	return host + "." + ns + ".svc." + suffix
}
