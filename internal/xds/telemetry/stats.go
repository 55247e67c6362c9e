package telemetry

import (
	"fmt"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Stats filter (docs/xds.md): Istio's standard metrics, configured by a
// TypedStruct whose value names the reporter.
const (
	StatsFilter  = "istio.stats"
	StatsTypeURL = "type.mizzen.dev/stats"
)

// Reporters, as the istio_* metrics label them.
const (
	ReporterSidecarInbound  = "SIDECAR_INBOUND"
	ReporterSidecarOutbound = "SIDECAR_OUTBOUND"
	ReporterGateway         = "GATEWAY"
)

func statsConfig(reporter string) *anypb.Any {
	ts := &xdstype.TypedStruct{
		TypeUrl: StatsTypeURL,
		Value: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reporter": structpb.NewStringValue(reporter),
		}},
	}
	a, err := anypb.New(ts)
	if err != nil {
		panic(fmt.Sprintf("marshal TypedStruct: %v", err)) // cannot fail for a registered type
	}
	return a
}

// StatsHTTPFilter is the istio.stats HTTP filter for one reporter
// (ReporterSidecarInbound, ReporterSidecarOutbound or ReporterGateway).
func StatsHTTPFilter(reporter string) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: StatsFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: statsConfig(reporter)}}
}

// StatsNetworkFilter is the istio.stats network filter (TCP metrics) for
// one reporter; it goes before tcp_proxy.
func StatsNetworkFilter(reporter string) *listener.Filter {
	return &listener.Filter{Name: StatsFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: statsConfig(reporter)}}
}
