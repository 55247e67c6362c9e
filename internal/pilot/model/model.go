// Package model is the control plane's view of the cluster: the services,
// endpoints, workloads and Istio configuration that discovery collects from
// the API server and that the xDS translation (internal/xds) turns into Envoy
// resources for one proxy.
//
// A PushContext is an immutable snapshot: discovery builds a new one after
// every debounced batch of changes and never mutates one that was handed out,
// so translation may read it from many goroutines without locks.
package model

import (
	"sort"
	"strings"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// Kind names an Istio configuration kind, as in its CRD.
type Kind string

// The Istio kinds the control plane reads.
const (
	KindVirtualService        Kind = "VirtualService"
	KindDestinationRule       Kind = "DestinationRule"
	KindGateway               Kind = "Gateway"
	KindServiceEntry          Kind = "ServiceEntry"
	KindSidecar               Kind = "Sidecar"
	KindPeerAuthentication    Kind = "PeerAuthentication"
	KindAuthorizationPolicy   Kind = "AuthorizationPolicy"
	KindRequestAuthentication Kind = "RequestAuthentication"
	KindTelemetry             Kind = "Telemetry"
)

// Meta is the Kubernetes metadata of one Istio object that translation needs.
type Meta struct {
	Kind              Kind
	Name              string
	Namespace         string
	Generation        int64
	ResourceVersion   string
	Labels            map[string]string
	Annotations       map[string]string
	CreationTimestamp time.Time
}

// Key is "namespace/name".
func (m Meta) Key() string { return m.Namespace + "/" + m.Name }

// Config is one Istio object: its metadata and its spec (the istio.io/api
// message; networking v1 and v1beta1 are aliases of v1alpha3, security v1 of
// v1beta1, telemetry v1 of v1alpha1).
type Config[T any] struct {
	Meta
	Spec T
}

// Protocol is a port's application protocol, from the Service port's
// appProtocol, else its name prefix (Istio's "http-web", "grpc", "tcp-db"...).
type Protocol string

// Protocols, as Istio names them.
const (
	ProtocolHTTP        Protocol = "HTTP"
	ProtocolHTTP2       Protocol = "HTTP2"
	ProtocolGRPC        Protocol = "GRPC"
	ProtocolHTTPS       Protocol = "HTTPS"
	ProtocolTLS         Protocol = "TLS"
	ProtocolTCP         Protocol = "TCP"
	ProtocolUnsupported Protocol = "UNSUPPORTED" // sniffed by the proxy
)

// IsHTTP reports whether traffic on the port is routed as HTTP.
func (p Protocol) IsHTTP() bool {
	return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC
}

// ParseProtocol maps an appProtocol or Istio protocol name ("http", "HTTP2",
// "grpc-web", "kubernetes.io/h2c", "https", "tls", "tcp", "mongo"...) to a
// Protocol; unknown names are ProtocolUnsupported.
func ParseProtocol(s string) Protocol {
	switch strings.ToLower(s) {
	case "http", "http-web":
		return ProtocolHTTP
	case "http2", "kubernetes.io/h2c", "h2c":
		return ProtocolHTTP2
	case "grpc", "grpc-web":
		return ProtocolGRPC
	case "https":
		return ProtocolHTTPS
	case "tls":
		return ProtocolTLS
	case "tcp", "mongo", "mysql", "redis":
		return ProtocolTCP
	}
	return ProtocolUnsupported
}

// PortProtocol is the protocol of a Kubernetes Service port: appProtocol
// first, else the name's prefix before the first '-'.
func PortProtocol(name string, appProtocol *string) Protocol {
	if appProtocol != nil && *appProtocol != "" {
		if p := ParseProtocol(*appProtocol); p != ProtocolUnsupported {
			return p
		}
	}
	prefix, _, _ := strings.Cut(name, "-")
	return ParseProtocol(prefix)
}

// Port is one port of a service.
type Port struct {
	Name     string
	Port     uint32
	Protocol Protocol
	// TargetPort is the Service's numeric targetPort (0 when named or
	// absent; endpoints carry the resolved port).
	TargetPort uint32
}

// Resolution says how a proxy finds a service's endpoints.
type Resolution int

const (
	// ClientSideLB: endpoints are sent over EDS and balanced by the proxy.
	ClientSideLB Resolution = iota
	// DNSLB: the proxy resolves the hostnames of the endpoints (ServiceEntry
	// resolution DNS) and balances over every address.
	DNSLB
	// DNSRoundRobinLB: ServiceEntry resolution DNS_ROUND_ROBIN.
	DNSRoundRobinLB
	// Passthrough: connections go to their original destination
	// (ServiceEntry resolution NONE, headless Services).
	Passthrough
)

// Service is a Kubernetes Service or one host of a ServiceEntry.
type Service struct {
	// Hostname is the FQDN: name.namespace.svc.<domain suffix>, or the
	// ServiceEntry host (may be a wildcard like *.example.com).
	Hostname  string
	Name      string // Kubernetes Service name, or ServiceEntry name
	Namespace string
	Ports     []Port
	// Addresses are the ClusterIP(s) or ServiceEntry addresses; empty for
	// headless services and address-less ServiceEntries.
	Addresses  []string
	Resolution Resolution
	// MeshExternal marks ServiceEntry location MESH_EXTERNAL.
	MeshExternal bool
	// ExportTo is "*", "." or namespace names (networking.istio.io/exportTo
	// annotation or ServiceEntry exportTo); empty means everywhere.
	ExportTo []string
	Labels   map[string]string
	// Selector selects the pods (or ServiceEntry workloadSelector) backing
	// the service; nil for selector-less services.
	Selector map[string]string
	// FromServiceEntry names the ServiceEntry ("ns/name") this host comes
	// from, empty for Kubernetes Services.
	FromServiceEntry string
}

// PortByName finds a port by name.
func (s *Service) PortByName(name string) (Port, bool) {
	for _, p := range s.Ports {
		if p.Name == name {
			return p, true
		}
	}
	return Port{}, false
}

// PortByNumber finds a port by service port number.
func (s *Service) PortByNumber(n uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Port == n {
			return p, true
		}
	}
	return Port{}, false
}

// Endpoint is one address serving one port of a service.
type Endpoint struct {
	Address string // IP, or hostname for DNS ServiceEntries
	// Port is the port the workload listens on (EndpointSlice port / target
	// port), ServicePort the service port it serves.
	Port        uint32
	ServicePort uint32
	// Labels are the pod's labels (found through the EndpointSlice's
	// targetRef), or the ServiceEntry endpoint's labels.
	Labels         map[string]string
	Namespace      string
	ServiceAccount string // Kubernetes ServiceAccount name
	PodName        string
	WorkloadName   string // Deployment-like name (pod owner chain), else pod name
	// TLSMode is "istio" when the workload runs a sidecar
	// (security.istio.io/tlsMode label), else "disabled".
	TLSMode string
	Ready   bool
	Weight  uint32
	Network string
}

// NodeType is the kind of proxy.
type NodeType string

const (
	// SidecarProxy is the proxy next to an application.
	SidecarProxy NodeType = "sidecar"
	// Router is an ingress or egress gateway.
	Router NodeType = "router"
)

// InterceptionMode says how traffic reaches a sidecar.
type InterceptionMode string

const (
	// InterceptionRedirect: proxy init redirected the pod's traffic to the
	// virtual listeners 15001 (outbound) and 15006 (inbound).
	InterceptionRedirect InterceptionMode = "REDIRECT"
	// InterceptionNone: nothing is captured; the proxy binds real listeners
	// (see Proxy.InboundBindAddress / OutboundBindAddress).
	InterceptionNone InterceptionMode = "NONE"
)

// Proxy is one connected xDS client. Identity fields (Namespace,
// ServiceAccount) come from the client's mTLS certificate, never from the
// node it reports; the rest is checked against the pod when one exists.
type Proxy struct {
	ID             string // the node id: sidecar~10.0.0.5~pod.ns~ns.svc.cluster.local
	Type           NodeType
	IPs            []string
	PodName        string
	Namespace      string
	ServiceAccount string
	Labels         map[string]string
	WorkloadName   string
	// ConfigNamespace is the namespace whose Sidecar/exportTo rules apply:
	// the proxy's namespace.
	ConfigNamespace  string
	InterceptionMode InterceptionMode
	// InboundBindAddress and OutboundBindAddress are used with
	// InterceptionNone: inbound listeners bind InboundBindAddress:<port>
	// (default the first IP) and forward to AppAddress:<targetPort>
	// (default 127.0.0.1); outbound listeners bind
	// OutboundBindAddress:<service port> (default 127.0.0.1).
	InboundBindAddress  string
	OutboundBindAddress string
	AppAddress          string
	// Metadata is the node metadata as the proxy sent it (string values,
	// ISTIO_META_* prefixes removed).
	Metadata map[string]string
	// GatewayPortMap maps a gateway Server port to the port the proxy
	// listens on (the gateway Service's targetPort); empty for sidecars.
	GatewayPortMap map[uint32]uint32
}

// Credential is a TLS key pair (and optional CA bundle) read from a Secret
// named by a Gateway server's credentialName.
type Credential struct {
	Namespace, Name string
	CertChain       []byte
	PrivateKey      []byte
	CACert          []byte // from ca.crt / cacert, or the <name>-cacert Secret
}

// PushContext is one immutable snapshot of everything translation reads.
type PushContext struct {
	// Version identifies the snapshot (monotonic).
	Version string
	Mesh    *meshconfig.MeshConfig
	// DomainSuffix is the cluster domain, "cluster.local".
	DomainSuffix string
	// TrustDomain of workload identities, "cluster.local".
	TrustDomain string
	// RootNamespace holds mesh-wide policies (PeerAuthentication etc.):
	// the control plane's namespace unless meshConfig.rootNamespace says otherwise.
	RootNamespace string

	// Services sorted by Hostname then Namespace.
	Services []*Service
	// Endpoints of each service: key is Hostname + "/" + Namespace
	// (ServiceKey), value sorted by Address, Port.
	Endpoints map[string][]*Endpoint
	// NamespaceLabels of every namespace.
	NamespaceLabels map[string]map[string]string

	VirtualServices        []Config[*networking.VirtualService]
	DestinationRules       []Config[*networking.DestinationRule]
	Gateways               []Config[*networking.Gateway]
	ServiceEntries         []Config[*networking.ServiceEntry]
	Sidecars               []Config[*networking.Sidecar]
	PeerAuthentications    []Config[*security.PeerAuthentication]
	AuthorizationPolicies  []Config[*security.AuthorizationPolicy]
	RequestAuthentications []Config[*security.RequestAuthentication]
	Telemetries            []Config[*telemetry.Telemetry]

	// Credentials holds the Secrets named by Gateway credentialName, keyed
	// by "namespace/name".
	Credentials map[string]*Credential
}

// ServiceKey is the key of PushContext.Endpoints.
func ServiceKey(s *Service) string { return s.Hostname + "/" + s.Namespace }

// EndpointsOf returns the endpoints of a service.
func (p *PushContext) EndpointsOf(s *Service) []*Endpoint {
	return p.Endpoints[ServiceKey(s)]
}

// ServicesByHost returns every service with the given hostname (one per
// namespace that defines it), sorted by namespace.
func (p *PushContext) ServicesByHost(host string) []*Service {
	i := sort.Search(len(p.Services), func(i int) bool { return p.Services[i].Hostname >= host })
	var out []*Service
	for ; i < len(p.Services) && p.Services[i].Hostname == host; i++ {
		out = append(out, p.Services[i])
	}
	return out
}

// SortServices orders services as PushContext.Services requires.
func SortServices(s []*Service) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].Hostname != s[j].Hostname {
			return s[i].Hostname < s[j].Hostname
		}
		return s[i].Namespace < s[j].Namespace
	})
}

// SortConfigs orders configs oldest first (creation time, then
// namespace/name): Istio's precedence when two objects conflict.
func SortConfigs[T any](c []Config[T]) {
	sort.SliceStable(c, func(i, j int) bool {
		if !c[i].CreationTimestamp.Equal(c[j].CreationTimestamp) {
			return c[i].CreationTimestamp.Before(c[j].CreationTimestamp)
		}
		return c[i].Key() < c[j].Key()
	})
}
