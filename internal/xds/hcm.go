package xds

import (
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cors "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// hcmOptions describe one HTTP connection manager.
type hcmOptions struct {
	statPrefix string
	// rds names the RouteConfiguration fetched over ADS; routeConfig is
	// used inline when set.
	rds         string
	routeConfig *route.RouteConfiguration
	// inbound sidecar chains and gateways run the security filters for port.
	policyPort uint32
	withPolicy bool
	reporter   string
}

func (g *gen) httpFilters(o hcmOptions) []*hcm.HttpFilter {
	var filters []*hcm.HttpFilter
	if o.withPolicy {
		filters = append(filters, hooks.InboundHTTPFilters(g.push, g.proxy, o.policyPort)...)
	}
	filters = append(filters,
		&hcm.HttpFilter{Name: FilterFault, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&fault.HTTPFault{})}},
		&hcm.HttpFilter{Name: FilterCORS, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&cors.Cors{})}},
	)
	if g.tel.Stats {
		filters = append(filters, hooks.StatsHTTPFilter(o.reporter))
	}
	return append(filters, &hcm.HttpFilter{Name: FilterRouter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})}})
}

func (g *gen) httpConnectionManager(o hcmOptions) *listener.Filter {
	m := &hcm.HttpConnectionManager{
		StatPrefix:     o.statPrefix,
		CodecType:      hcm.HttpConnectionManager_AUTO,
		HttpFilters:    g.httpFilters(o),
		Tracing:        g.tel.Tracing,
		AccessLog:      g.tel.AccessLogs,
		UpgradeConfigs: []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
	}
	switch {
	case g.proxy.Type == model.Router:
		m.UseRemoteAddress = wrapperspb.Bool(true)
		m.ForwardClientCertDetails = hcm.HttpConnectionManager_SANITIZE_SET
		m.SetCurrentClientCertDetails = &hcm.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Uri: true, Dns: true}
	case o.reporter == ReporterInbound:
		m.ForwardClientCertDetails = hcm.HttpConnectionManager_APPEND_FORWARD
		m.SetCurrentClientCertDetails = &hcm.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Uri: true, Dns: true}
	default:
		m.ForwardClientCertDetails = hcm.HttpConnectionManager_SANITIZE
	}
	if o.routeConfig != nil {
		m.RouteSpecifier = &hcm.HttpConnectionManager_RouteConfig{RouteConfig: o.routeConfig}
	} else {
		m.RouteSpecifier = &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{ConfigSource: adsSource(), RouteConfigName: o.rds}}
	}
	return &listener.Filter{Name: FilterHCM, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(m)}}
}

// weightedCluster is one destination of a TCP route.
type weightedCluster struct {
	name   string
	weight uint32
}

// tcpFilters are the network filters of a TCP chain ending in tcp_proxy.
func (g *gen) tcpFilters(statPrefix string, dests []weightedCluster, withPolicy bool, policyPort uint32, reporter string) []*listener.Filter {
	var filters []*listener.Filter
	if withPolicy {
		filters = append(filters, hooks.InboundNetworkFilters(g.push, g.proxy, policyPort)...)
	}
	if g.tel.Stats {
		filters = append(filters, hooks.StatsNetworkFilter(reporter))
	}
	tp := &tcpproxy.TcpProxy{StatPrefix: statPrefix, AccessLog: g.tel.AccessLogs, IdleTimeout: g.tcpIdleTimeout(dests[0].name)}
	if len(dests) == 1 {
		tp.ClusterSpecifier = &tcpproxy.TcpProxy_Cluster{Cluster: dests[0].name}
	} else {
		wc := &tcpproxy.TcpProxy_WeightedCluster{}
		for _, d := range dests {
			wc.Clusters = append(wc.Clusters, &tcpproxy.TcpProxy_WeightedCluster_ClusterWeight{Name: d.name, Weight: d.weight})
		}
		tp.ClusterSpecifier = &tcpproxy.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	return append(filters, &listener.Filter{Name: FilterTCPProxy, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(tp)}})
}

// tcpIdleTimeout is the DestinationRule's connectionPool.tcp.idleTimeout
// for an outbound cluster (nil keeps Envoy's one hour).
func (g *gen) tcpIdleTimeout(clusterName string) *durationpb.Duration {
	dir, port, subset, host, err := ParseClusterName(clusterName)
	if err != nil || dir != Outbound {
		return nil
	}
	svcNS := ""
	for _, s := range g.push.ServicesByHost(host) {
		if g.serviceVisible(s) {
			svcNS = s.Namespace
			break
		}
	}
	dr := g.destinationRule(host, svcNS)
	if dr == nil {
		return nil
	}
	var ss *networking.Subset
	for _, s := range dr.Spec.GetSubsets() {
		if s.GetName() == subset && subset != "" {
			ss = s
		}
	}
	p := effectivePolicy(dr.Spec, ss, port)
	if d := p.pool.GetTcp().GetIdleTimeout(); d != nil && d.AsDuration() > 0 {
		return durationpb.New(d.AsDuration())
	}
	return nil
}
