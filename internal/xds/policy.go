package xds

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// destinationRule finds the DestinationRule for a service host as the proxy
// sees it: an exact host beats a wildcard (the longest wildcard wins), and
// among equals the proxy's namespace, then the service's, then the root
// namespace; oldest first within a namespace.
func (g *gen) destinationRule(host, svcNS string) *model.Config[*networking.DestinationRule] {
	key := host + "/" + svcNS
	if dr, ok := g.drCache[key]; ok {
		return dr
	}
	dr := g.findDestinationRule(host, svcNS)
	g.drCache[key] = dr
	return dr
}

func (g *gen) findDestinationRule(host, svcNS string) *model.Config[*networking.DestinationRule] {
	rank := func(dr *model.Config[*networking.DestinationRule]) (int, int, bool) {
		h := g.drHosts[dr]
		if !hostMatches(h, host) {
			return 0, 0, false
		}
		specificity := len(h)
		if h == host {
			specificity = 1 << 20
		}
		nsRank := 0
		switch dr.Namespace {
		case g.scope.proxyNS:
			nsRank = 3
		case svcNS:
			nsRank = 2
		case g.push.RootNamespace:
			nsRank = 1
		default:
			nsRank = 0
		}
		return specificity, nsRank, true
	}
	var best *model.Config[*networking.DestinationRule]
	var bestSpec, bestNS int
	for _, dr := range g.drs {
		spec, ns, ok := rank(dr)
		if !ok {
			continue
		}
		if best == nil || spec > bestSpec || (spec == bestSpec && ns > bestNS) {
			best, bestSpec, bestNS = dr, spec, ns
		}
	}
	return best
}

// policy is the effective traffic policy of one cluster.
type policy struct {
	lb      *networking.LoadBalancerSettings
	pool    *networking.ConnectionPoolSettings
	outlier *networking.OutlierDetection
	tls     *networking.ClientTLSSettings
}

// overlay replaces every field tp sets, then the port-level settings for
// port inside tp.
func (p *policy) overlay(tp *networking.TrafficPolicy, port uint32) {
	if tp == nil {
		return
	}
	if tp.LoadBalancer != nil {
		p.lb = tp.LoadBalancer
	}
	if tp.ConnectionPool != nil {
		p.pool = tp.ConnectionPool
	}
	if tp.OutlierDetection != nil {
		p.outlier = tp.OutlierDetection
	}
	if tp.Tls != nil {
		p.tls = tp.Tls
	}
	for _, pl := range tp.PortLevelSettings {
		if pl.GetPort().GetNumber() != port {
			continue
		}
		if pl.LoadBalancer != nil {
			p.lb = pl.LoadBalancer
		}
		if pl.ConnectionPool != nil {
			p.pool = pl.ConnectionPool
		}
		if pl.OutlierDetection != nil {
			p.outlier = pl.OutlierDetection
		}
		if pl.Tls != nil {
			p.tls = pl.Tls
		}
	}
}

// effectivePolicy merges the DestinationRule's top-level policy with the
// subset's, each with its port-level overrides (subset wins).
func effectivePolicy(dr *networking.DestinationRule, subset *networking.Subset, port uint32) policy {
	var p policy
	if dr == nil {
		return p
	}
	p.overlay(dr.TrafficPolicy, port)
	if subset != nil {
		p.overlay(subset.TrafficPolicy, port)
	}
	return p
}

// consistentHash returns the consistent-hash settings that apply to a
// destination, or nil.
func (g *gen) consistentHash(host string, svcNS string, subset string, port uint32) *networking.LoadBalancerSettings_ConsistentHashLB {
	dr := g.destinationRule(host, svcNS)
	if dr == nil {
		return nil
	}
	var ss *networking.Subset
	for _, s := range dr.Spec.GetSubsets() {
		if s.GetName() == subset {
			ss = s
		}
	}
	p := effectivePolicy(dr.Spec, ss, port)
	return p.lb.GetConsistentHash()
}

func trimNS(s string) string {
	if _, after, ok := strings.Cut(s, "/"); ok {
		return after
	}
	return s
}
