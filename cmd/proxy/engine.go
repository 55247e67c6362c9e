package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
	"github.com/mizzen-mesh/mizzen/internal/proxy/capture"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane"
	"github.com/mizzen-mesh/mizzen/internal/proxy/router"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// newDataplane builds the data plane the agent drives: connections, TLS,
// filters and telemetry (internal/proxy/dataplane) around the routing
// engine made of internal/proxy/router and internal/proxy/upstream.
func newDataplane(o agent.DataplaneOptions) (agent.Dataplane, error) {
	return dataplane.New(dataplane.Options{
		Node: o.Node, Secrets: o.Secrets, Log: o.Log, Registry: o.Registry,
		Engine:      engine{},
		OriginalDst: originalDst,
	})
}

func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination of a %T", c)
	}
	return capture.OriginalDst(tc)
}

// engine is dataplane.Engine: clusters from internal/proxy/upstream (the
// data plane's adapter), routes and request handling from
// internal/proxy/router.
type engine struct{}

var _ dataplane.Engine = engine{}

func (engine) BuildUpstreams(snap *config.Snapshot, prev dataplane.Upstreams, secrets config.Secrets, log *slog.Logger) (dataplane.Upstreams, error) {
	return dataplane.BuildUpstreams(snap, prev, secrets, log)
}

func (engine) CompileRoutes(rc *route.RouteConfiguration) (dataplane.Routes, error) {
	return router.Compile(rc)
}

func (engine) NewHandler(routes func() dataplane.Routes, ups func() dataplane.Upstreams, log *slog.Logger) http.Handler {
	return router.NewHandler(func() *router.Table {
		t, _ := routes().(*router.Table)
		return t
	}, router.Options{
		Upstreams: func() *upstream.Set { return dataplane.UpstreamSetOf(ups()) },
		Log:       log,
	})
}

func (engine) WithRequestInfo(ctx context.Context) (context.Context, func() dataplane.RequestInfo) {
	ctx, ri := router.WithRequestInfo(ctx)
	return ctx, func() dataplane.RequestInfo {
		out := dataplane.RequestInfo{
			RouteName: ri.RouteName, ClusterName: ri.ClusterName, Cluster: dataplane.ClusterInfo(ri.Cluster),
			ResponseFlags: ri.ResponseFlags, Operation: ri.Operation,
		}
		if h := ri.Host; h != nil {
			w := dataplane.Workload{Cluster: h.WorkloadCluster()}
			w.Name, w.Namespace, w.Canonical, w.Revision = h.Workload()
			out.Upstream = &w
			out.UpstreamHost = h.Addr.String()
			if h.Hostname != "" {
				out.UpstreamHost = net.JoinHostPort(h.Hostname, strconv.Itoa(int(h.Port)))
			}
		}
		return out
	}
}
