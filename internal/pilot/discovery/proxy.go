package discovery

import (
	"encoding/json"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// Node metadata keys (docs/xds.md).
const (
	MetaNamespace           = "NAMESPACE"
	MetaName                = "NAME"
	MetaServiceAccount      = "SERVICE_ACCOUNT"
	MetaInstanceIPs         = "INSTANCE_IPS"
	MetaLabels              = "LABELS"
	MetaWorkloadName        = "WORKLOAD_NAME"
	MetaInterceptionMode    = "INTERCEPTION_MODE"
	MetaInboundBindAddress  = "INBOUND_BIND_ADDRESS"
	MetaOutboundBindAddress = "OUTBOUND_BIND_ADDRESS"
	MetaAppAddress          = "APP_ADDRESS"
	MetaGatewayName         = "GATEWAY_NAME"
	metaPrefix              = "ISTIO_META_"
)

// NodeID is a parsed node id: <type>~<ip>~<pod>.<namespace>~<namespace>.svc.<suffix>.
type NodeID struct {
	Type      model.NodeType
	IP        string
	PodName   string
	Namespace string
	Domain    string
}

// ParseNodeID parses a node id.
func ParseNodeID(id string) (NodeID, error) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return NodeID{}, fmt.Errorf("node id %q is not type~ip~pod.namespace~namespace.svc.domain", id)
	}
	n := NodeID{Type: model.NodeType(parts[0]), IP: parts[1], Domain: parts[3]}
	if n.Type != model.SidecarProxy && n.Type != model.Router {
		return NodeID{}, fmt.Errorf("node id %q: type %q is neither %q nor %q", id, parts[0], model.SidecarProxy, model.Router)
	}
	if !isIP(n.IP) {
		return NodeID{}, fmt.Errorf("node id %q: %q is not an IP address", id, n.IP)
	}
	pod, ns, ok := strings.Cut(parts[2], ".")
	if !ok || pod == "" || ns == "" {
		return NodeID{}, fmt.Errorf("node id %q: %q is not pod.namespace", id, parts[2])
	}
	n.PodName, n.Namespace = pod, ns
	return n, nil
}

// nodeMetadata flattens the node metadata to strings (ISTIO_META_
// prefixes removed; a non-string LABELS object is kept as JSON).
func nodeMetadata(s *structpb.Struct) map[string]string {
	out := map[string]string{}
	for k, v := range s.GetFields() {
		k = strings.TrimPrefix(k, metaPrefix)
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			out[k] = x.StringValue
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue, *structpb.Value_StructValue, *structpb.Value_ListValue:
			b, err := v.MarshalJSON()
			if err == nil {
				out[k] = string(b)
			}
		}
	}
	return out
}

// BuildProxy makes the model of a connected proxy from its node and the
// identity of its client certificate. It refuses a node whose namespace or
// service account disagrees with the certificate, and a node naming a pod
// that exists with another service account. Labels, IPs and the workload
// name come from the pod when it exists, else from the node metadata; with
// INTERCEPTION_MODE NONE the IPs are the ones the node reports (the proxy
// binds them). Routers get GatewayPortMap from the Services of their
// namespace that select them.
func (c *Controller) BuildProxy(node *corev3.Node, certNamespace, certServiceAccount string) (*model.Proxy, error) {
	if node == nil {
		return nil, fmt.Errorf("no node in the request")
	}
	if certNamespace == "" || certServiceAccount == "" {
		return nil, fmt.Errorf("no client certificate identity")
	}
	id, err := ParseNodeID(node.GetId())
	if err != nil {
		return nil, err
	}
	md := nodeMetadata(node.GetMetadata())
	p := &model.Proxy{
		ID:               node.GetId(),
		Type:             id.Type,
		PodName:          id.PodName,
		Namespace:        id.Namespace,
		ServiceAccount:   md[MetaServiceAccount],
		WorkloadName:     md[MetaWorkloadName],
		InterceptionMode: model.InterceptionRedirect,
		Metadata:         md,
	}
	if v := md[MetaNamespace]; v != "" && v != id.Namespace {
		return nil, fmt.Errorf("node id names namespace %q but its metadata %q", id.Namespace, v)
	}
	if v := md[MetaName]; v != "" {
		p.PodName = v
	}
	if p.Namespace != certNamespace {
		return nil, fmt.Errorf("node namespace %q does not match the certificate's namespace %q", p.Namespace, certNamespace)
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = certServiceAccount
	} else if p.ServiceAccount != certServiceAccount {
		return nil, fmt.Errorf("node service account %q does not match the certificate's %q", p.ServiceAccount, certServiceAccount)
	}
	switch m := model.InterceptionMode(md[MetaInterceptionMode]); m {
	case "", model.InterceptionRedirect:
	case model.InterceptionNone:
		p.InterceptionMode = m
	default:
		return nil, fmt.Errorf("node metadata %s %q is neither %s nor %s", MetaInterceptionMode, m, model.InterceptionRedirect, model.InterceptionNone)
	}
	p.ConfigNamespace = p.Namespace

	c.mu.Lock()
	pod := c.idx.pods[p.Namespace+"/"+p.PodName]
	c.mu.Unlock()
	if pod != nil {
		if pod.ServiceAccount != certServiceAccount {
			return nil, fmt.Errorf("pod %s/%s runs as service account %q, not the certificate's %q", pod.Namespace, pod.Name, pod.ServiceAccount, certServiceAccount)
		}
		p.Labels = pod.Labels
		p.WorkloadName = pod.WorkloadName
		p.IPs = pod.IPs
	} else if v := md[MetaLabels]; v != "" {
		if err := json.Unmarshal([]byte(v), &p.Labels); err != nil {
			return nil, fmt.Errorf("node metadata %s is not a JSON object of strings: %w", MetaLabels, err)
		}
	}
	if pod == nil || p.InterceptionMode == model.InterceptionNone || len(p.IPs) == 0 {
		p.IPs = nil
		for _, ip := range splitList(md[MetaInstanceIPs]) {
			if !isIP(ip) {
				return nil, fmt.Errorf("node metadata %s: %q is not an IP address", MetaInstanceIPs, ip)
			}
			p.IPs = append(p.IPs, ip)
		}
		if len(p.IPs) == 0 {
			p.IPs = []string{id.IP}
		}
	}
	if p.WorkloadName == "" {
		p.WorkloadName = p.PodName
	}
	if p.InterceptionMode == model.InterceptionNone {
		p.InboundBindAddress = md[MetaInboundBindAddress]
		if p.InboundBindAddress == "" {
			p.InboundBindAddress = p.IPs[0]
		}
		p.OutboundBindAddress = md[MetaOutboundBindAddress]
		if p.OutboundBindAddress == "" {
			p.OutboundBindAddress = "127.0.0.1"
		}
		p.AppAddress = md[MetaAppAddress]
		if p.AppAddress == "" {
			p.AppAddress = "127.0.0.1"
		}
	}
	if p.Type == model.Router {
		p.GatewayPortMap = c.gatewayPortMap(p.Namespace, p.Labels, pod)
	}
	return p, nil
}

// gatewayPortMap maps the ports of the Services in ns that select labels to
// their numeric target ports (named target ports resolved on the pod).
func (c *Controller) gatewayPortMap(ns string, labels map[string]string, pod *podInfo) map[uint32]uint32 {
	out := map[uint32]uint32{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.idx.services {
		if s.Namespace != ns || s.Selector == nil || !selects(s.Selector, labels) {
			continue
		}
		for _, port := range s.Ports {
			target := port.TargetPort
			if target == 0 {
				target = port.Port
				if named, ok := c.idx.namedTargets[s.Namespace+"/"+s.Name][port.Name]; ok && pod != nil {
					if n, ok := pod.ContainerPorts[named]; ok {
						target = n
					}
				}
			}
			out[port.Port] = target
		}
	}
	return out
}
