package telemetry

import (
	"testing"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestStatsFilters(t *testing.T) {
	for _, reporter := range []string{ReporterSidecarInbound, ReporterSidecarOutbound, ReporterGateway} {
		h := StatsHTTPFilter(reporter)
		n := StatsNetworkFilter(reporter)
		if err := h.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := n.Validate(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name string
			cfg  *anypb.Any
		}{{h.GetName(), h.GetTypedConfig()}, {n.GetName(), n.GetTypedConfig()}} {
			if c.name != "istio.stats" {
				t.Errorf("filter name %q", c.name)
			}
			if c.cfg.GetTypeUrl() != "type.googleapis.com/xds.type.v3.TypedStruct" {
				t.Errorf("config type %q", c.cfg.GetTypeUrl())
			}
			ts := &xdstype.TypedStruct{}
			if err := c.cfg.UnmarshalTo(ts); err != nil {
				t.Fatal(err)
			}
			if err := ts.Validate(); err != nil {
				t.Fatal(err)
			}
			if ts.GetTypeUrl() != "type.mizzen.dev/stats" || ts.GetValue().GetFields()["reporter"].GetStringValue() != reporter {
				t.Errorf("typed struct %v, want reporter %s", ts, reporter)
			}
		}
	}
}
