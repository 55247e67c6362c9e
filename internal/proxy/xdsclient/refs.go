package xdsclient

import (
	"slices"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// Secret names the proxy resolves itself (docs/xds.md): never requested.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// endpointNames are the EDS service names of the EDS clusters, sorted.
func endpointNames(clusters map[string]*cluster.Cluster) []string {
	var out []string
	for name, c := range clusters {
		if c.GetType() != cluster.Cluster_EDS {
			continue
		}
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
			name = sn
		}
		out = append(out, name)
	}
	return sortedUnique(out)
}

// routeNames are the RDS route configurations the listeners' HTTP
// connection managers name, sorted.
func routeNames(listeners map[string]*listener.Listener) []string {
	var out []string
	for _, l := range listeners {
		for _, fc := range filterChains(l) {
			for _, f := range fc.GetFilters() {
				tc := f.GetTypedConfig()
				if tc == nil {
					continue
				}
				var m hcm.HttpConnectionManager
				if tc.MessageIs(&m) && tc.UnmarshalTo(&m) == nil {
					if n := m.GetRds().GetRouteConfigName(); n != "" {
						out = append(out, n)
					}
				}
			}
		}
	}
	return sortedUnique(out)
}

func filterChains(l *listener.Listener) []*listener.FilterChain {
	fcs := slices.Clone(l.GetFilterChains())
	if d := l.GetDefaultFilterChain(); d != nil {
		fcs = append(fcs, d)
	}
	return fcs
}

// secretNames are the SDS secrets the listeners' and clusters' TLS
// contexts name, except the proxy's own, sorted.
func secretNames(s *config.Snapshot) []string {
	var out []string
	add := func(ts *core.TransportSocket) {
		tc := ts.GetTypedConfig()
		if tc == nil {
			return
		}
		var common *tlsv3.CommonTlsContext
		var down tlsv3.DownstreamTlsContext
		var up tlsv3.UpstreamTlsContext
		switch {
		case tc.MessageIs(&down):
			if tc.UnmarshalTo(&down) != nil {
				return
			}
			common = down.GetCommonTlsContext()
		case tc.MessageIs(&up):
			if tc.UnmarshalTo(&up) != nil {
				return
			}
			common = up.GetCommonTlsContext()
		default:
			return
		}
		for _, sc := range common.GetTlsCertificateSdsSecretConfigs() {
			out = append(out, sc.GetName())
		}
		out = append(out, common.GetValidationContextSdsSecretConfig().GetName(),
			common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName())
	}
	for _, l := range s.Listeners {
		for _, fc := range filterChains(l) {
			add(fc.GetTransportSocket())
		}
	}
	for _, c := range s.Clusters {
		add(c.GetTransportSocket())
		for _, m := range c.GetTransportSocketMatches() {
			add(m.GetTransportSocket())
		}
	}
	out = slices.DeleteFunc(out, func(n string) bool { return n == "" || n == SecretDefault || n == SecretRootCA })
	return sortedUnique(out)
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
