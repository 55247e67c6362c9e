package discovery

import (
	"net"
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// Well-known labels and annotations.
const (
	AnnotationExportTo = "networking.istio.io/exportTo"
	LabelTLSMode       = "security.istio.io/tlsMode"
	TLSModeIstio       = "istio"
	TLSModeDisabled    = "disabled"
	labelPodTemplate   = "pod-template-hash"
)

// Hostname is the FQDN of a Kubernetes Service.
func Hostname(name, namespace, suffix string) string {
	return name + "." + namespace + ".svc." + suffix
}

// convertService maps a Kubernetes Service to the model.
func convertService(svc *corev1.Service, suffix string) *model.Service {
	s := &model.Service{
		Hostname:  Hostname(svc.Name, svc.Namespace, suffix),
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Labels:    svc.Labels,
		ExportTo:  splitList(svc.Annotations[AnnotationExportTo]),
	}
	if len(svc.Spec.Selector) > 0 {
		s.Selector = svc.Spec.Selector
	}
	for _, p := range svc.Spec.Ports {
		mp := model.Port{Name: p.Name, Port: uint32(p.Port), Protocol: model.PortProtocol(p.Name, p.AppProtocol)}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal > 0 {
			mp.TargetPort = uint32(p.TargetPort.IntVal)
		} else if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
			// An absent targetPort defaults to the port.
			mp.TargetPort = uint32(p.Port)
		}
		s.Ports = append(s.Ports, mp)
	}
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		s.Resolution = model.DNSLB
		s.MeshExternal = true
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		s.Resolution = model.Passthrough
	default:
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		s.Addresses = append([]string(nil), ips...)
	}
	return s
}

// externalNameEndpoints are the endpoints of an ExternalName Service: its
// DNS name on every port, resolved by the proxy.
func externalNameEndpoints(svc *corev1.Service, s *model.Service) []*model.Endpoint {
	var out []*model.Endpoint
	for _, p := range s.Ports {
		out = append(out, &model.Endpoint{Address: svc.Spec.ExternalName, Port: p.Port, ServicePort: p.Port,
			Namespace: s.Namespace, TLSMode: TLSModeDisabled, Ready: true})
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// podInfo is what discovery keeps of a pod.
type podInfo struct {
	Name, Namespace string
	Labels          map[string]string
	ServiceAccount  string
	IPs             []string
	WorkloadName    string
	// ContainerPorts maps named container ports to numbers (named
	// targetPorts of gateway Services).
	ContainerPorts map[string]uint32
	Ready          bool
	Terminating    bool
}

func (p *podInfo) equal(o *podInfo) bool {
	return p.Name == o.Name && p.Namespace == o.Namespace && p.ServiceAccount == o.ServiceAccount &&
		p.WorkloadName == o.WorkloadName && p.Ready == o.Ready && p.Terminating == o.Terminating &&
		mapsEqual(p.Labels, o.Labels) && strings.Join(p.IPs, ",") == strings.Join(o.IPs, ",") &&
		mapsEqual(p.ContainerPorts, o.ContainerPorts)
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func newPodInfo(pod *corev1.Pod) *podInfo {
	p := &podInfo{
		Name:           pod.Name,
		Namespace:      pod.Namespace,
		Labels:         pod.Labels,
		ServiceAccount: pod.Spec.ServiceAccountName,
		WorkloadName:   workloadName(pod),
		Terminating:    pod.DeletionTimestamp != nil,
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	for _, ip := range pod.Status.PodIPs {
		p.IPs = append(p.IPs, ip.IP)
	}
	if len(p.IPs) == 0 && pod.Status.PodIP != "" {
		p.IPs = []string{pod.Status.PodIP}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			p.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				if p.ContainerPorts == nil {
					p.ContainerPorts = map[string]uint32{}
				}
				p.ContainerPorts[cp.Name] = uint32(cp.ContainerPort)
			}
		}
	}
	return p
}

// workloadName is the pod's Deployment-like owner: a ReplicaSet owner with
// the pod-template-hash suffix removed (the Deployment's name), another
// controller owner's name (StatefulSet, DaemonSet, Job), else the pod name.
func workloadName(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := pod.Labels[labelPodTemplate]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return strings.TrimSuffix(o.Name, "-"+h)
			}
		}
		if o.Kind == "Job" {
			// CronJob jobs are <cronjob>-<schedule time>.
			if i := strings.LastIndexByte(o.Name, '-'); i > 0 && isDigits(o.Name[i+1:]) {
				return o.Name[:i]
			}
		}
		return o.Name
	}
	return pod.Name
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// stripPod keeps only the fields discovery reads, to bound memory.
func stripPod(pod *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{}
	out.Name, out.Namespace, out.UID, out.ResourceVersion = pod.Name, pod.Namespace, pod.UID, pod.ResourceVersion
	out.Labels, out.OwnerReferences, out.DeletionTimestamp = pod.Labels, pod.OwnerReferences, pod.DeletionTimestamp
	out.Spec.ServiceAccountName, out.Spec.NodeName = pod.Spec.ServiceAccountName, pod.Spec.NodeName
	for _, c := range pod.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, p := range c.Ports {
			if p.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
		}
	}
	out.Status.Phase, out.Status.PodIP, out.Status.PodIPs = pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out
}

// sliceInfo is what discovery keeps of an EndpointSlice.
type sliceInfo struct {
	Service string // "namespace/name" of the Service
	Ports   []slicePort
	Eps     []sliceEndpoint
}

type slicePort struct {
	Name string
	Port uint32
}

type sliceEndpoint struct {
	Addresses []string
	Ready     bool
	Pod       string // "namespace/name" of the targetRef pod, or ""
}

func newSliceInfo(es *discoveryv1.EndpointSlice) *sliceInfo {
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" || es.AddressType == discoveryv1.AddressTypeFQDN {
		return nil
	}
	si := &sliceInfo{Service: es.Namespace + "/" + name}
	for _, p := range es.Ports {
		if p.Port == nil {
			continue
		}
		sp := slicePort{Port: uint32(*p.Port)}
		if p.Name != nil {
			sp.Name = *p.Name
		}
		si.Ports = append(si.Ports, sp)
	}
	for _, e := range es.Endpoints {
		se := sliceEndpoint{Addresses: e.Addresses, Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
		if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
			ns := e.TargetRef.Namespace
			if ns == "" {
				ns = es.Namespace
			}
			se.Pod = ns + "/" + e.TargetRef.Name
		}
		si.Eps = append(si.Eps, se)
	}
	return si
}

// serviceEndpoints builds the endpoints of a Kubernetes Service from its
// slices: one per address and port, matched to the service port by name,
// with the pod's identity; sorted by address and port, duplicates (a pod in
// two slices while they are rewritten) merged, ready first.
func serviceEndpoints(svc *model.Service, slices []*sliceInfo, pods map[string]*podInfo) []*model.Endpoint {
	type key struct {
		addr string
		port uint32
	}
	seen := map[key]*model.Endpoint{}
	var out []*model.Endpoint
	for _, sl := range slices {
		for _, p := range sl.Ports {
			sp, ok := svc.PortByName(p.Name)
			if !ok {
				continue
			}
			for _, e := range sl.Eps {
				pod := pods[e.Pod]
				for _, a := range e.Addresses {
					k := key{a, p.Port}
					if prev, ok := seen[k]; ok {
						prev.Ready = prev.Ready || e.Ready
						continue
					}
					ep := &model.Endpoint{Address: a, Port: p.Port, ServicePort: sp.Port, Namespace: svc.Namespace,
						TLSMode: TLSModeDisabled, Ready: e.Ready}
					if pod != nil {
						fillFromPod(ep, pod)
					}
					seen[k] = ep
					out = append(out, ep)
				}
			}
		}
	}
	sortEndpoints(out)
	return out
}

func fillFromPod(ep *model.Endpoint, pod *podInfo) {
	ep.Labels = pod.Labels
	ep.Namespace = pod.Namespace
	ep.ServiceAccount = pod.ServiceAccount
	ep.PodName = pod.Name
	ep.WorkloadName = pod.WorkloadName
	ep.TLSMode = tlsMode(pod.Labels)
}

func tlsMode(labels map[string]string) string {
	if m := labels[LabelTLSMode]; m != "" {
		return m
	}
	return TLSModeDisabled
}

func sortEndpoints(eps []*model.Endpoint) {
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].Address != eps[j].Address {
			return eps[i].Address < eps[j].Address
		}
		if eps[i].Port != eps[j].Port {
			return eps[i].Port < eps[j].Port
		}
		return eps[i].ServicePort < eps[j].ServicePort
	})
}

// convertServiceEntry maps a ServiceEntry to one service per host, with
// its endpoints keyed by model.ServiceKey: the spec's endpoints; with a
// workloadSelector, the pods of its namespace that match; for DNS
// resolution without either, the host itself.
func convertServiceEntry(cfg model.Config[*networking.ServiceEntry], pods []*podInfo) ([]*model.Service, map[string][]*model.Endpoint) {
	se := cfg.Spec
	var res model.Resolution
	switch se.GetResolution() {
	case networking.ServiceEntry_NONE:
		res = model.Passthrough
	case networking.ServiceEntry_STATIC:
		res = model.ClientSideLB
	case networking.ServiceEntry_DNS:
		res = model.DNSLB
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		res = model.DNSRoundRobinLB
	}
	var ports []model.Port
	for _, p := range se.GetPorts() {
		ports = append(ports, model.Port{Name: p.GetName(), Port: p.GetNumber(),
			Protocol: model.ParseProtocol(p.GetProtocol()), TargetPort: p.GetTargetPort()})
	}
	var selector map[string]string
	if ws := se.GetWorkloadSelector(); ws != nil && len(ws.GetLabels()) > 0 {
		selector = ws.GetLabels()
	}
	var svcs []*model.Service
	eps := map[string][]*model.Endpoint{}
	for _, host := range se.GetHosts() {
		s := &model.Service{
			Hostname:         host,
			Name:             cfg.Name,
			Namespace:        cfg.Namespace,
			Ports:            ports,
			Addresses:        append([]string(nil), se.GetAddresses()...),
			Resolution:       res,
			MeshExternal:     se.GetLocation() == networking.ServiceEntry_MESH_EXTERNAL,
			ExportTo:         append([]string(nil), se.GetExportTo()...),
			Labels:           cfg.Labels,
			Selector:         selector,
			FromServiceEntry: cfg.Key(),
		}
		svcs = append(svcs, s)
		var list []*model.Endpoint
		for _, p := range ports {
			for _, we := range se.GetEndpoints() {
				port := p.Port
				if p.TargetPort != 0 {
					port = p.TargetPort
				}
				if n, ok := we.GetPorts()[p.Name]; ok && n != 0 {
					port = n
				}
				ns := cfg.Namespace
				list = append(list, &model.Endpoint{Address: we.GetAddress(), Port: port, ServicePort: p.Port,
					Labels: we.GetLabels(), Namespace: ns, ServiceAccount: we.GetServiceAccount(),
					TLSMode: tlsMode(we.GetLabels()), Ready: true, Weight: we.GetWeight(), Network: we.GetNetwork()})
			}
			if selector != nil {
				for _, pod := range pods {
					if pod.Namespace != cfg.Namespace || pod.Terminating || !selects(selector, pod.Labels) {
						continue
					}
					port := p.Port
					if p.TargetPort != 0 {
						port = p.TargetPort
					}
					for _, ip := range pod.IPs {
						ep := &model.Endpoint{Address: ip, Port: port, ServicePort: p.Port, Ready: pod.Ready}
						fillFromPod(ep, pod)
						list = append(list, ep)
					}
				}
			}
			if len(se.GetEndpoints()) == 0 && selector == nil && (res == model.DNSLB || res == model.DNSRoundRobinLB) &&
				!strings.HasPrefix(host, "*") {
				port := p.Port
				if p.TargetPort != 0 {
					port = p.TargetPort
				}
				list = append(list, &model.Endpoint{Address: host, Port: port, ServicePort: p.Port,
					Namespace: cfg.Namespace, TLSMode: TLSModeDisabled, Ready: true})
			}
		}
		sortEndpoints(list)
		if len(list) > 0 {
			eps[model.ServiceKey(s)] = list
		}
	}
	return svcs, eps
}

// selects reports whether every selector label is in labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func isIP(s string) bool { return net.ParseIP(s) != nil }
