package telemetry

import (
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// XDSSettings is ForProxy in the shape of xds.Hooks.Telemetry.
func XDSSettings(push *model.PushContext, proxy *model.Proxy) xds.TelemetrySettings {
	s := ForProxy(push, proxy)
	return xds.TelemetrySettings{Tracing: s.Tracing, AccessLogs: s.AccessLogs, Stats: s.Stats}
}

// SkippedFor lists the Telemetry objects (and mesh config settings) that
// could not be applied for the proxy; the caller adds them to
// xds.Resources.Skipped next to security.SkippedFor.
func SkippedFor(push *model.PushContext, proxy *model.Proxy) []xds.Skipped {
	return ForProxy(push, proxy).Skipped
}
