package xds

import (
	"fmt"
	"sort"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// gen holds the state of one translation.
type gen struct {
	push  *model.PushContext
	proxy *model.Proxy
	scope *scope
	tel   TelemetrySettings
	// endpointsOnly: GenerateEndpoints needs the EDS targets, not the
	// clusters themselves.
	endpointsOnly bool

	// services visible to the proxy, in PushContext order.
	services []*model.Service
	// vss visible to the proxy, oldest first.
	vss []*model.Config[*networking.VirtualService]
	// drs visible to the proxy, oldest first.
	drs []*model.Config[*networking.DestinationRule]

	clusters  map[string]*cluster.Cluster
	eds       map[string]edsTarget
	listeners map[string]*listener.Listener
	routes    map[string]*route.RouteConfiguration
	secrets   map[string]*tls.Secret
	skipped   map[Skipped]bool

	// memoized lookups (translation of one proxy asks the same questions
	// once per service port)
	drCache  map[string]*model.Config[*networking.DestinationRule]
	drHosts  map[*model.Config[*networking.DestinationRule]]string
	vsHosts  map[*model.Config[*networking.VirtualService]][]string
	boundVSs map[string][]*model.Config[*networking.VirtualService]
}

// edsTarget is what one EDS cluster load-balances over.
type edsTarget struct {
	svc    *model.Service
	port   uint32
	subset map[string]string
}

// Generate translates the snapshot into the resources one proxy receives.
// It is pure and deterministic, and never panics: an Istio object whose
// translation fails is left out and listed in Resources.Skipped.
func Generate(push *model.PushContext, proxy *model.Proxy) (res *Resources) {
	g := newGen(push, proxy)
	defer func() {
		if r := recover(); r != nil {
			g.skip("Proxy", g.proxy.Namespace, g.proxy.ID, fmt.Sprintf("translation failed: %v", r))
			res = g.resources()
		}
	}()
	for _, s := range hooks.Skipped(g.push, g.proxy) {
		g.skipped[s] = true
	}
	g.buildClusters()
	if g.proxy.Type == model.Router {
		g.buildGateway()
	} else {
		g.buildSidecarListeners()
	}
	return g.resources()
}

// GenerateEndpoints returns the ClusterLoadAssignments of the named EDS
// clusters, as Generate would (names the proxy does not see are ignored).
func GenerateEndpoints(push *model.PushContext, proxy *model.Proxy, clusterNames []string) []*endpoint.ClusterLoadAssignment {
	g := newGen(push, proxy)
	g.endpointsOnly = true
	defer func() { _ = recover() }()
	g.buildClusters()
	var out []*endpoint.ClusterLoadAssignment
	for _, name := range uniqueSorted(append([]string(nil), clusterNames...)) {
		if t, ok := g.eds[name]; ok {
			out = append(out, g.loadAssignment(name, t))
		}
	}
	return out
}

func newGen(push *model.PushContext, proxy *model.Proxy) *gen {
	if push == nil {
		push = &model.PushContext{}
	}
	if push.Mesh == nil {
		p := *push // never write to the shared snapshot
		p.Mesh = &meshconfig.MeshConfig{}
		push = &p
	}
	if proxy == nil {
		proxy = &model.Proxy{Type: model.SidecarProxy}
	}
	g := &gen{
		push:      push,
		proxy:     proxy,
		clusters:  map[string]*cluster.Cluster{},
		eds:       map[string]edsTarget{},
		listeners: map[string]*listener.Listener{},
		routes:    map[string]*route.RouteConfiguration{},
		secrets:   map[string]*tls.Secret{},
		skipped:   map[Skipped]bool{},
		drCache:   map[string]*model.Config[*networking.DestinationRule]{},
		drHosts:   map[*model.Config[*networking.DestinationRule]]string{},
		vsHosts:   map[*model.Config[*networking.VirtualService]][]string{},
		boundVSs:  map[string][]*model.Config[*networking.VirtualService]{},
	}
	g.scope = newScope(push, proxy)
	g.tel = hooks.Telemetry(push, proxy)
	for _, svc := range push.Services {
		if svc != nil && g.serviceVisible(svc) {
			g.services = append(g.services, svc)
		}
	}
	for i := range push.VirtualServices {
		vs := &push.VirtualServices[i]
		if vs.Spec == nil {
			continue
		}
		if len(vs.Spec.GetHosts()) == 0 {
			continue // a delegate: only reached through a root's delegate
		}
		if g.vsVisible(vs) {
			g.vss = append(g.vss, vs)
		}
	}
	for i := range push.DestinationRules {
		dr := &push.DestinationRules[i]
		if dr.Spec != nil && dr.Spec.GetHost() != "" && g.drVisible(dr) {
			if sel := dr.Spec.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 {
				if dr.Namespace != g.scope.proxyNS || !labelsMatch(sel, proxy.Labels) {
					continue
				}
			}
			g.drs = append(g.drs, dr)
			g.drHosts[dr] = g.fqdn(dr.Spec.GetHost(), dr.Namespace)
		}
	}
	// Istio's precedence is creation order; do not rely on the caller's.
	sort.SliceStable(g.vss, func(i, j int) bool { return olderThan(g.vss[i].Meta, g.vss[j].Meta) })
	sort.SliceStable(g.drs, func(i, j int) bool { return olderThan(g.drs[i].Meta, g.drs[j].Meta) })
	return g
}

func olderThan(a, b model.Meta) bool {
	if !a.CreationTimestamp.Equal(b.CreationTimestamp) {
		return a.CreationTimestamp.Before(b.CreationTimestamp)
	}
	return a.Key() < b.Key()
}

// guard runs fn for one Istio object and turns a panic into a Skipped entry.
func (g *gen) guard(kind model.Kind, ns, name string, fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			g.skip(string(kind), ns, name, fmt.Sprintf("translation failed: %v", r))
			ok = false
		}
	}()
	fn()
	return true
}

func (g *gen) skip(kind, ns, name, reason string) {
	g.skipped[Skipped{Kind: kind, Namespace: ns, Name: name, Reason: reason}] = true
}

func (g *gen) resources() *Resources {
	r := &Resources{}
	for _, c := range g.clusters {
		r.Clusters = append(r.Clusters, c)
	}
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].Name < r.Clusters[j].Name })
	for name, t := range g.eds {
		r.Endpoints = append(r.Endpoints, g.loadAssignment(name, t))
	}
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].ClusterName < r.Endpoints[j].ClusterName })
	for _, l := range g.listeners {
		r.Listeners = append(r.Listeners, l)
	}
	sort.Slice(r.Listeners, func(i, j int) bool { return r.Listeners[i].Name < r.Listeners[j].Name })
	for _, rc := range g.routes {
		r.Routes = append(r.Routes, rc)
	}
	sort.Slice(r.Routes, func(i, j int) bool { return r.Routes[i].Name < r.Routes[j].Name })
	for _, s := range g.secrets {
		r.Secrets = append(r.Secrets, s)
	}
	sort.Slice(r.Secrets, func(i, j int) bool { return r.Secrets[i].Name < r.Secrets[j].Name })
	for s := range g.skipped {
		r.Skipped = append(r.Skipped, s)
	}
	sort.Slice(r.Skipped, func(i, j int) bool {
		a, b := r.Skipped[i], r.Skipped[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Reason < b.Reason
	})
	return r
}
