package discovery

import (
	"sort"
	"strings"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// index holds what the informers reported, converted, plus what changed
// since the last snapshot. The event handlers update it under the
// Controller's lock; build turns it into a PushContext, reusing every part
// of the previous snapshot that did not change.
type index struct {
	suffix string
	mesh   *meshconfig.MeshConfig
	// selectors are the mesh's discoverySelectors (nil: every namespace);
	// always are namespaces visible regardless (root and control plane).
	selectors []labels.Selector
	always    map[string]bool

	services  map[string]*model.Service  // "ns/name"
	externals map[string]*corev1.Service // ExternalName Services, "ns/name"
	// namedTargets: Service "ns/name" -> port name -> named targetPort.
	namedTargets map[string]map[string]string
	slices       map[string]*sliceInfo      // EndpointSlice "ns/name"
	svcSlices    map[string]map[string]bool // Service "ns/name" -> slice keys
	pods         map[string]*podInfo        // "ns/name"
	podSvcs      map[string]map[string]bool // pod "ns/name" -> Service "ns/name"
	namespaces   map[string]map[string]string
	secrets      map[string]*corev1.Secret
	configs      map[model.Kind]map[string]any // kind -> "ns/name" -> model.Config[*T]
	credNames    map[string]bool

	dirtyServices   bool
	dirtyEndpoints  map[string]bool // Service "ns/name"
	dirtyKinds      map[model.Kind]bool
	dirtyNamespaces bool
	dirtySecrets    bool
	dirtyMesh       bool
	dirtyPods       bool // for ServiceEntry workload selectors

	// Built parts reused across snapshots.
	k8sEndpoints map[string][]*model.Endpoint // Service "ns/name"
	seServices   []*model.Service
	seEndpoints  map[string][]*model.Endpoint // model.ServiceKey
	seSelectors  bool
}

func newIndex(suffix string) *index {
	return &index{
		suffix:         suffix,
		services:       map[string]*model.Service{},
		externals:      map[string]*corev1.Service{},
		namedTargets:   map[string]map[string]string{},
		slices:         map[string]*sliceInfo{},
		svcSlices:      map[string]map[string]bool{},
		pods:           map[string]*podInfo{},
		podSvcs:        map[string]map[string]bool{},
		namespaces:     map[string]map[string]string{},
		secrets:        map[string]*corev1.Secret{},
		configs:        map[model.Kind]map[string]any{},
		credNames:      map[string]bool{},
		dirtyEndpoints: map[string]bool{},
		dirtyKinds:     map[model.Kind]bool{},
		k8sEndpoints:   map[string][]*model.Endpoint{},
		seEndpoints:    map[string][]*model.Endpoint{},
		dirtyServices:  true,
	}
}

// setMesh replaces the mesh config. Invalid discovery selectors are
// returned as errors and match no namespace.
func (ix *index) setMesh(m *meshconfig.MeshConfig, controlNamespace string) error {
	ix.mesh = m
	ix.dirtyMesh = true
	ix.always = map[string]bool{controlNamespace: true, m.GetRootNamespace(): true}
	var err error
	ix.selectors, err = discoverySelectors(m)
	return err
}

// visible reports whether the mesh's discoverySelectors select the
// namespace (any selector matching its labels), or it is always visible.
func (ix *index) visible(ns string) bool {
	if len(ix.selectors) == 0 || ix.always[ns] {
		return true
	}
	l := labels.Set(ix.namespaces[ns])
	for _, s := range ix.selectors {
		if s.Matches(l) {
			return true
		}
	}
	return false
}

// setService records a Service (nil deletes it).
func (ix *index) setService(key string, svc *corev1.Service) {
	ix.dirtyServices = true
	ix.dirtyEndpoints[key] = true
	delete(ix.externals, key)
	delete(ix.namedTargets, key)
	if svc == nil {
		delete(ix.services, key)
		return
	}
	ix.services[key] = convertService(svc, ix.suffix)
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "" {
			if ix.namedTargets[key] == nil {
				ix.namedTargets[key] = map[string]string{}
			}
			ix.namedTargets[key][p.Name] = p.TargetPort.StrVal
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		ix.externals[key] = svc
	}
}

// setSlice records an EndpointSlice (nil deletes it) and returns the
// Service it belongs to ("" if none).
func (ix *index) setSlice(key string, si *sliceInfo) string {
	var svc string
	if old := ix.slices[key]; old != nil {
		svc = old.Service
		delete(ix.svcSlices[old.Service], key)
		if len(ix.svcSlices[old.Service]) == 0 {
			delete(ix.svcSlices, old.Service)
		}
		ix.dirtyEndpoints[old.Service] = true
	}
	if si == nil {
		delete(ix.slices, key)
		return svc
	}
	ix.slices[key] = si
	if ix.svcSlices[si.Service] == nil {
		ix.svcSlices[si.Service] = map[string]bool{}
	}
	ix.svcSlices[si.Service][key] = true
	ix.dirtyEndpoints[si.Service] = true
	for _, e := range si.Eps {
		if e.Pod == "" {
			continue
		}
		if ix.podSvcs[e.Pod] == nil {
			ix.podSvcs[e.Pod] = map[string]bool{}
		}
		ix.podSvcs[e.Pod][si.Service] = true
	}
	return si.Service
}

// setPod records a pod (nil deletes it); it returns whether anything
// discovery uses changed and the hostnames whose endpoints it changes: the
// Services whose slices name it, and the ServiceEntries whose workload
// selector matches it (before or after the change).
func (ix *index) setPod(key string, p *podInfo) (bool, []string) {
	old := ix.pods[key]
	if p == nil {
		delete(ix.pods, key)
	} else {
		if old != nil && old.equal(p) {
			return false, nil
		}
		ix.pods[key] = p
	}
	ix.dirtyPods = true
	hosts := map[string]bool{}
	for s := range ix.podSvcs[key] {
		ix.dirtyEndpoints[s] = true
		if svc := ix.services[s]; svc != nil {
			hosts[svc.Hostname] = true
		}
	}
	if p == nil {
		delete(ix.podSvcs, key)
	}
	for _, se := range ix.seServices {
		if se.Selector == nil {
			continue
		}
		for _, pod := range []*podInfo{old, p} {
			if pod != nil && pod.Namespace == se.Namespace && selects(se.Selector, pod.Labels) {
				hosts[se.Hostname] = true
			}
		}
	}
	out := make([]string, 0, len(hosts))
	for h := range hosts {
		out = append(out, h)
	}
	sort.Strings(out)
	return true, out
}

// setConfig records an Istio object (nil deletes it).
func (ix *index) setConfig(kind model.Kind, key string, cfg any) {
	ix.dirtyKinds[kind] = true
	m := ix.configs[kind]
	if m == nil {
		m = map[string]any{}
		ix.configs[kind] = m
	}
	if cfg == nil {
		delete(m, key)
	} else {
		m[key] = cfg
	}
	if kind == model.KindGateway {
		ix.credNames = credentialNames(configList[*networking.Gateway](m, nil))
		ix.dirtySecrets = true
	}
}

// credentialSecret reports whether a Secret name is, or may hold the CA
// of, a credential some Gateway names.
func (ix *index) credentialSecret(name string) bool {
	return ix.credNames[name] || ix.credNames[strings.TrimSuffix(name, CACertSuffix)]
}

func configList[T any](m map[string]any, visible func(string) bool) []model.Config[T] {
	out := make([]model.Config[T], 0, len(m))
	for _, v := range m {
		if c := v.(model.Config[T]); visible == nil || visible(c.Namespace) {
			out = append(out, c)
		}
	}
	model.SortConfigs(out)
	return out
}

// rebuildKind rebuilds one kind's list if it changed, else reuses prev's.
func rebuildKind[T any](ix *index, kind model.Kind, prev []model.Config[T], hadPrev bool) []model.Config[T] {
	if hadPrev && !ix.dirtyKinds[kind] {
		return prev
	}
	return configList[T](ix.configs[kind], ix.visible)
}

// build makes a new snapshot; prev (may be nil) lends its unchanged parts.
func (ix *index) build(version, controlNamespace string, prev *model.PushContext) *model.PushContext {
	p := &model.PushContext{Version: version, Mesh: ix.mesh, DomainSuffix: ix.suffix}
	p.TrustDomain = ix.mesh.GetTrustDomain()
	if p.TrustDomain == "" {
		p.TrustDomain = "cluster.local"
	}
	p.RootNamespace = ix.mesh.GetRootNamespace()
	if p.RootNamespace == "" {
		p.RootNamespace = controlNamespace
	}
	// A new mesh config, or namespace labels changing under discovery
	// selectors, may change what is visible: rebuild everything.
	had := prev != nil && !ix.dirtyMesh && !(ix.dirtyNamespaces && len(ix.selectors) > 0)
	if !had {
		prev = &model.PushContext{}
	}
	p.VirtualServices = rebuildKind(ix, model.KindVirtualService, prev.VirtualServices, had)
	p.DestinationRules = rebuildKind(ix, model.KindDestinationRule, prev.DestinationRules, had)
	p.Gateways = rebuildKind(ix, model.KindGateway, prev.Gateways, had)
	p.ServiceEntries = rebuildKind(ix, model.KindServiceEntry, prev.ServiceEntries, had)
	p.Sidecars = rebuildKind(ix, model.KindSidecar, prev.Sidecars, had)
	p.PeerAuthentications = rebuildKind[*security.PeerAuthentication](ix, model.KindPeerAuthentication, prev.PeerAuthentications, had)
	p.AuthorizationPolicies = rebuildKind[*security.AuthorizationPolicy](ix, model.KindAuthorizationPolicy, prev.AuthorizationPolicies, had)
	p.RequestAuthentications = rebuildKind[*security.RequestAuthentication](ix, model.KindRequestAuthentication, prev.RequestAuthentications, had)
	p.Telemetries = rebuildKind[*telemetry.Telemetry](ix, model.KindTelemetry, prev.Telemetries, had)

	// ServiceEntries: rebuilt when they change, or when pods change and
	// one selects pods.
	seChanged := !had || ix.dirtyKinds[model.KindServiceEntry] || (ix.dirtyPods && ix.seSelectors)
	if seChanged {
		var pods []*podInfo
		ix.seSelectors = false
		for _, se := range p.ServiceEntries {
			if se.Spec.GetWorkloadSelector() != nil {
				ix.seSelectors = true
			}
		}
		if ix.seSelectors {
			pods = make([]*podInfo, 0, len(ix.pods))
			for _, pod := range ix.pods {
				pods = append(pods, pod)
			}
		}
		ix.seServices = nil
		ix.seEndpoints = map[string][]*model.Endpoint{}
		for _, se := range p.ServiceEntries {
			svcs, eps := convertServiceEntry(se, pods)
			ix.seServices = append(ix.seServices, svcs...)
			for k, v := range eps {
				ix.seEndpoints[k] = append(ix.seEndpoints[k], v...)
			}
		}
	}

	if !had || ix.dirtyServices || seChanged {
		p.Services = make([]*model.Service, 0, len(ix.services)+len(ix.seServices))
		for _, s := range ix.services {
			if ix.visible(s.Namespace) {
				p.Services = append(p.Services, s)
			}
		}
		for _, s := range ix.seServices {
			if ix.visible(s.Namespace) {
				p.Services = append(p.Services, s)
			}
		}
		model.SortServices(p.Services)
	} else {
		p.Services = prev.Services
	}

	// Endpoints of Kubernetes Services that changed.
	for key := range ix.dirtyEndpoints {
		svc := ix.services[key]
		if svc == nil {
			delete(ix.k8sEndpoints, key)
			continue
		}
		if ext := ix.externals[key]; ext != nil {
			ix.k8sEndpoints[key] = externalNameEndpoints(ext, svc)
			continue
		}
		var slices []*sliceInfo
		sliceKeys := make([]string, 0, len(ix.svcSlices[key]))
		for k := range ix.svcSlices[key] {
			sliceKeys = append(sliceKeys, k)
		}
		sort.Strings(sliceKeys)
		for _, k := range sliceKeys {
			slices = append(slices, ix.slices[k])
		}
		if eps := serviceEndpoints(svc, slices, ix.pods); len(eps) > 0 {
			ix.k8sEndpoints[key] = eps
		} else {
			delete(ix.k8sEndpoints, key)
		}
	}
	if !had || len(ix.dirtyEndpoints) > 0 || seChanged {
		p.Endpoints = make(map[string][]*model.Endpoint, len(ix.k8sEndpoints)+len(ix.seEndpoints))
		for key, eps := range ix.k8sEndpoints {
			if svc := ix.services[key]; ix.visible(svc.Namespace) {
				p.Endpoints[model.ServiceKey(svc)] = eps
			}
		}
		for k, eps := range ix.seEndpoints {
			if ix.visible(k[strings.LastIndexByte(k, '/')+1:]) {
				p.Endpoints[k] = append(p.Endpoints[k], eps...)
			}
		}
	} else {
		p.Endpoints = prev.Endpoints
	}

	if !had || ix.dirtyNamespaces {
		p.NamespaceLabels = make(map[string]map[string]string, len(ix.namespaces))
		for k, v := range ix.namespaces {
			if ix.visible(k) {
				p.NamespaceLabels[k] = v
			}
		}
	} else {
		p.NamespaceLabels = prev.NamespaceLabels
	}

	if !had || ix.dirtySecrets {
		p.Credentials = buildCredentials(ix.credNames, ix.secrets)
		for k, c := range p.Credentials {
			if !ix.visible(c.Namespace) {
				delete(p.Credentials, k)
			}
		}
	} else {
		p.Credentials = prev.Credentials
	}

	ix.dirtyServices, ix.dirtyNamespaces, ix.dirtySecrets, ix.dirtyMesh, ix.dirtyPods = false, false, false, false, false
	clear(ix.dirtyEndpoints)
	clear(ix.dirtyKinds)
	return p
}
