// Package config holds what the proxy's parts share: the set of xDS
// resources the proxy serves (Snapshot), where its own certificates come
// from (Secrets) and who it is (Node). The xDS client builds Snapshots; the
// data plane applies them atomically.
package config

import (
	"crypto/tls"
	"crypto/x509"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Snapshot is one complete set of resources, keyed by resource name. A
// Snapshot is never modified after it is handed to the data plane; the xDS
// client builds a new one (sharing unchanged messages) for every update.
type Snapshot struct {
	Listeners map[string]*listener.Listener
	Routes    map[string]*route.RouteConfiguration
	Clusters  map[string]*cluster.Cluster
	Endpoints map[string]*endpoint.ClusterLoadAssignment
	Secrets   map[string]*tlsv3.Secret
	// Versions is the accepted version_info per type URL.
	Versions map[string]string
}

// Clone returns a shallow copy whose maps may be changed independently.
func (s *Snapshot) Clone() *Snapshot {
	out := &Snapshot{
		Listeners: make(map[string]*listener.Listener, len(s.Listeners)),
		Routes:    make(map[string]*route.RouteConfiguration, len(s.Routes)),
		Clusters:  make(map[string]*cluster.Cluster, len(s.Clusters)),
		Endpoints: make(map[string]*endpoint.ClusterLoadAssignment, len(s.Endpoints)),
		Secrets:   make(map[string]*tlsv3.Secret, len(s.Secrets)),
		Versions:  make(map[string]string, len(s.Versions)),
	}
	for k, v := range s.Listeners {
		out.Listeners[k] = v
	}
	for k, v := range s.Routes {
		out.Routes[k] = v
	}
	for k, v := range s.Clusters {
		out.Clusters[k] = v
	}
	for k, v := range s.Endpoints {
		out.Endpoints[k] = v
	}
	for k, v := range s.Secrets {
		out.Secrets[k] = v
	}
	for k, v := range s.Versions {
		out.Versions[k] = v
	}
	return out
}

// Secrets supplies the proxy's own identity: the SDS secrets "default"
// (workload key pair) and "ROOTCA" (mesh roots) of docs/xds.md. Both may
// change at any time (rotation); callers read them at each TLS handshake.
type Secrets interface {
	// WorkloadCertificate returns the current workload key pair, whose
	// leaf carries the SPIFFE URI SAN.
	WorkloadCertificate() (*tls.Certificate, error)
	// RootCAs returns the current mesh roots.
	RootCAs() *x509.CertPool
}

// Mode is what the proxy runs as.
type Mode string

const (
	ModeSidecar Mode = "sidecar"
	ModeRouter  Mode = "router"
)

// Node describes this proxy: what it reports to the control plane (node id
// and metadata) and what telemetry labels it stamps.
type Node struct {
	Mode           Mode
	ID             string // <mode>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local
	PodName        string
	Namespace      string
	ServiceAccount string
	IPs            []string
	Labels         map[string]string
	WorkloadName   string
	ClusterID      string
	MeshID         string
	TrustDomain    string
	Revision       string
	// Metadata is sent as the node metadata (docs/xds.md), string values.
	Metadata map[string]string
}

// CanonicalService is the service.istio.io/canonical-name label, else
// app.kubernetes.io/name, else app, else the workload name.
func (n *Node) CanonicalService() string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := n.Labels[k]; v != "" {
			return v
		}
	}
	return n.WorkloadName
}

// CanonicalRevision is the service.istio.io/canonical-revision label, else
// app.kubernetes.io/version, else version, else "latest".
func (n *Node) CanonicalRevision() string {
	for _, k := range []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"} {
		if v := n.Labels[k]; v != "" {
			return v
		}
	}
	return "latest"
}
