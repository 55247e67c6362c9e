package xds

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Filter and extension names of docs/xds.md.
const (
	FilterHCM         = "envoy.filters.network.http_connection_manager"
	FilterTCPProxy    = "envoy.filters.network.tcp_proxy"
	FilterFault       = "envoy.filters.http.fault"
	FilterCORS        = "envoy.filters.http.cors"
	FilterRouter      = "envoy.filters.http.router"
	FilterStats       = "istio.stats"
	StatsTypeURL      = "type.mizzen.dev/stats"
	FilterTLSInspect  = "envoy.filters.listener.tls_inspector"
	FilterHTTPInspect = "envoy.filters.listener.http_inspector"
	SocketTLS         = "envoy.transport_sockets.tls"
	SocketRawBuffer   = "envoy.transport_sockets.raw_buffer"
	HTTPProtocolOpts  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

	VirtualOutboundListener = "virtualOutbound"
	VirtualInboundListener  = "virtualInbound"
	VirtualOutboundPort     = 15001
	VirtualInboundPort      = 15006
)

// Stats reporters.
const (
	ReporterInbound  = "SIDECAR_INBOUND"
	ReporterOutbound = "SIDECAR_OUTBOUND"
	ReporterGateway  = "GATEWAY"
)

// mustAny marshals a message into an Any; the messages are built here and
// always marshal.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err))
	}
	return a
}

func statsTypedStruct(reporter string) *anypb.Any {
	return mustAny(&xdstype.TypedStruct{
		TypeUrl: StatsTypeURL,
		Value: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reporter": structpb.NewStringValue(reporter),
		}},
	})
}

func statsHTTPFilter(reporter string) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: FilterStats, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: statsTypedStruct(reporter)}}
}

func statsNetworkFilter(reporter string) *listener.Filter {
	return &listener.Filter{Name: FilterStats, ConfigType: &listener.Filter_TypedConfig{TypedConfig: statsTypedStruct(reporter)}}
}

func socketAddress(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       ip,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

func portStr(p uint32) string { return strconv.FormatUint(uint64(p), 10) }

func listenerName(ip string, port uint32) string { return ip + "_" + portStr(port) }

// labelsMatch reports whether every selector label is in labels.
func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// hostMatches reports whether a (possibly wildcard) pattern covers host:
// "*" covers everything, "*.example.com" covers "a.example.com" and
// "*.b.example.com".
func hostMatches(pattern, host string) bool {
	if pattern == "*" || pattern == host {
		return true
	}
	if strings.HasPrefix(pattern, "*") {
		suffix := pattern[1:]
		if strings.HasPrefix(host, "*") {
			return strings.HasSuffix(host[1:], suffix)
		}
		return strings.HasSuffix(host, suffix)
	}
	return false
}

// hostsIntersect reports whether two host patterns share a host.
func hostsIntersect(a, b string) bool { return hostMatches(a, b) || hostMatches(b, a) }

// moreSpecific returns the narrower of two intersecting host patterns.
func moreSpecific(a, b string) string {
	if hostMatches(a, b) {
		return b
	}
	return a
}

func uniqueSorted(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}
