package xds

import (
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// DefaultClusterID names the cluster in endpoint workload metadata.
const DefaultClusterID = "Kubernetes"

// loadAssignment is the ClusterLoadAssignment of one EDS cluster: the
// service's endpoints for the port whose labels match the subset.
func (g *gen) loadAssignment(name string, t edsTarget) *endpoint.ClusterLoadAssignment {
	cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
	var lbs []*endpoint.LbEndpoint
	for _, ep := range g.push.EndpointsOf(t.svc) {
		if ep == nil || ep.Address == "" || ep.Port == 0 {
			continue
		}
		if ep.ServicePort != 0 && ep.ServicePort != t.port {
			continue
		}
		if !labelsMatch(t.subset, ep.Labels) {
			continue
		}
		lbs = append(lbs, g.lbEndpoint(ep, ep.Port))
	}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	return cla
}

func (g *gen) lbEndpoint(ep *model.Endpoint, port uint32) *endpoint.LbEndpoint {
	lb := &endpoint.LbEndpoint{
		HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(ep.Address, port)}},
		HealthStatus:   core.HealthStatus_HEALTHY,
	}
	if !ep.Ready {
		lb.HealthStatus = core.HealthStatus_UNHEALTHY
	}
	if ep.Weight > 0 {
		lb.LoadBalancingWeight = wrapperspb.UInt32(ep.Weight)
	}
	tlsMode := ep.TLSMode
	if tlsMode == "" {
		tlsMode = "disabled"
	}
	lb.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(tlsMode)}},
		"istio":                        {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(workloadMetadata(ep))}},
	}}
	return lb
}

// workloadMetadata is "<workload>;<namespace>;<canonical name>;<canonical revision>;<cluster>".
func workloadMetadata(ep *model.Endpoint) string {
	workload := ep.WorkloadName
	if workload == "" {
		workload = ep.PodName
	}
	name := ep.Labels["service.istio.io/canonical-name"]
	if name == "" {
		name = ep.Labels["app.kubernetes.io/name"]
	}
	if name == "" {
		name = ep.Labels["app"]
	}
	if name == "" {
		name = workload
	}
	rev := ep.Labels["service.istio.io/canonical-revision"]
	if rev == "" {
		rev = ep.Labels["app.kubernetes.io/version"]
	}
	if rev == "" {
		rev = ep.Labels["version"]
	}
	if rev == "" {
		rev = "latest"
	}
	return workload + ";" + ep.Namespace + ";" + name + ";" + rev + ";" + DefaultClusterID
}
