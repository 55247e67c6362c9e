// Package xds translates the control plane's model (internal/pilot/model)
// into the Envoy v3 resources one proxy receives, following the contract in
// docs/xds.md. Translation is pure: the same PushContext and Proxy always
// give the same resources, which is what golden files and fuzzing rely on.
package xds

import (
	"fmt"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Type URLs of the resources translation produces.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// Resources is everything one proxy is sent, each list sorted by name.
type Resources struct {
	Listeners []*listener.Listener
	Routes    []*route.RouteConfiguration
	Clusters  []*cluster.Cluster
	Endpoints []*endpoint.ClusterLoadAssignment
	Secrets   []*tls.Secret
	// Skipped lists the Istio objects (kind/namespace/name) left out of
	// this proxy's config because they were invalid, with the reason.
	Skipped []Skipped
}

// Skipped records an Istio object translation ignored.
type Skipped struct {
	Kind, Namespace, Name string
	Reason                string
}

// Well-known cluster names.
const (
	PassthroughCluster        = "PassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
	// SecretDefault and SecretRootCA are resolved by the proxy itself.
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
	// CredentialPrefix starts the names of Secrets sent to gateways.
	CredentialPrefix = "kubernetes://"
)

// Direction of a cluster.
type Direction string

const (
	Outbound Direction = "outbound"
	Inbound  Direction = "inbound"
)

// ClusterName builds "outbound|9080|v1|reviews.default.svc.cluster.local".
func ClusterName(dir Direction, port uint32, subset, host string) string {
	return string(dir) + "|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// ParseClusterName splits a name built by ClusterName.
func ParseClusterName(name string) (dir Direction, port uint32, subset, host string, err error) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 {
		return "", 0, "", "", fmt.Errorf("cluster name %q is not direction|port|subset|host", name)
	}
	p, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return "", 0, "", "", fmt.Errorf("cluster name %q: bad port: %w", name, err)
	}
	return Direction(parts[0]), uint32(p), parts[2], parts[3], nil
}

// OutboundSNI builds "outbound_.9080_.v1_.reviews.default.svc.cluster.local".
func OutboundSNI(port uint32, subset, host string) string {
	return "outbound_." + strconv.FormatUint(uint64(port), 10) + "_." + subset + "_." + host
}

// SpiffeID builds "spiffe://<trustDomain>/ns/<ns>/sa/<sa>".
func SpiffeID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}
