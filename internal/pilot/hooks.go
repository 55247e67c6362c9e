package pilot

import (
	"sync"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
	"github.com/mizzen-mesh/mizzen/internal/xds/security"
	"github.com/mizzen-mesh/mizzen/internal/xds/telemetry"
)

var hooksOnce sync.Once

// installHooks plugs the security and telemetry translation into
// internal/xds (once per process: the hooks are package state there).
func installHooks() {
	hooksOnce.Do(func() {
		xds.SetHooks(xds.Hooks{
			InboundMTLSMode: func(push *model.PushContext, proxy *model.Proxy, port uint32) xds.MTLSMode {
				return xds.MTLSMode(security.InboundMTLSMode(push, proxy, port))
			},
			InboundHTTPFilters:    security.InboundHTTPFilters,
			InboundNetworkFilters: security.InboundNetworkFilters,
			InboundTLSContext:     security.InboundTLSContext,
			IstioMutualUpstream:   security.IstioMutualUpstream,
			Telemetry:             telemetry.XDSSettings,
			StatsHTTPFilter:       telemetry.StatsHTTPFilter,
			StatsNetworkFilter:    telemetry.StatsNetworkFilter,
		})
	})
}

// generate translates for one proxy, and lists the security and telemetry
// objects the translation had to leave out with the networking ones.
func generate(push *model.PushContext, p *model.Proxy) *xds.Resources {
	res := xds.Generate(push, p)
	res.Skipped = append(res.Skipped, security.SkippedFor(push, p)...)
	res.Skipped = append(res.Skipped, telemetry.SkippedFor(push, p)...)
	return res
}
