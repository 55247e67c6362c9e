package dataplane

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/router"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// DefaultEngine is the proxy's Engine: clusters from internal/proxy/upstream
// and routing from internal/proxy/router. New uses it when Options.Engine
// is nil.
type DefaultEngine struct{}

// BuildUpstreams builds the snapshot's clusters with upstream.Build.
func (DefaultEngine) BuildUpstreams(snap *config.Snapshot, prev Upstreams, secrets config.Secrets, log *slog.Logger) (Upstreams, error) {
	return BuildUpstreams(snap, prev, secrets, log)
}

// CompileRoutes compiles with router.Compile.
func (DefaultEngine) CompileRoutes(rc *route.RouteConfiguration) (Routes, error) {
	return router.Compile(rc)
}

// NewHandler serves with router.NewHandler; ORIGINAL_DST clusters get the
// downstream connection's original destination.
func (DefaultEngine) NewHandler(routes func() Routes, upstreams func() Upstreams, log *slog.Logger) http.Handler {
	return router.NewHandler(
		func() *router.Table {
			t, _ := routes().(*router.Table)
			return t
		},
		router.Options{
			Upstreams: func() *upstream.Set { return UpstreamSetOf(upstreams()) },
			Log:       log,
			OriginalDst: func(r *http.Request) netip.AddrPort {
				if ci := connInfoFrom(r.Context()); ci != nil {
					return ci.dst
				}
				return netip.AddrPort{}
			},
		})
}

// WithRequestInfo prepares the router's RequestInfo.
func (DefaultEngine) WithRequestInfo(ctx context.Context) (context.Context, func() RequestInfo) {
	ctx, ri := router.WithRequestInfo(ctx)
	return ctx, func() RequestInfo {
		out := RequestInfo{
			RouteName:     ri.RouteName,
			ClusterName:   ri.ClusterName,
			ResponseFlags: ri.ResponseFlags,
			Operation:     ri.Operation,
			Cluster: ClusterInfo{ServiceHost: ri.Cluster.ServiceHost, ServiceName: ri.Cluster.ServiceName,
				ServiceNamespace: ri.Cluster.ServiceNamespace, Subset: ri.Cluster.Subset},
		}
		if h := ri.Host; h != nil {
			out.UpstreamHost = h.Address()
			w := &Workload{Cluster: h.WorkloadCluster()}
			w.Name, w.Namespace, w.Canonical, w.Revision = h.Workload()
			out.Upstream = w
		}
		return out
	}
}
