package dataplane

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// Engine is what the data plane delegates to the proxy's routing and
// cluster packages (internal/proxy/router and internal/proxy/upstream):
// building clusters from a snapshot, compiling route tables and serving a
// request through them. The data plane owns connections, TLS, filters and
// telemetry; the engine owns where a request goes. Keeping this seam small
// lets the data plane's behaviour be tested on its own.
type Engine interface {
	// BuildUpstreams builds the clusters of snap, reusing what it can of
	// prev (which may be nil). It must not disturb prev.
	BuildUpstreams(snap *config.Snapshot, prev Upstreams, secrets config.Secrets, log *slog.Logger) (Upstreams, error)
	// CompileRoutes compiles one RouteConfiguration.
	CompileRoutes(rc *route.RouteConfiguration) (Routes, error)
	// NewHandler serves requests with the route table and clusters current
	// when each request starts.
	NewHandler(routes func() Routes, upstreams func() Upstreams, log *slog.Logger) http.Handler
	// WithRequestInfo prepares ctx so that the handler records what it did;
	// the returned function reads the record once the handler returned.
	WithRequestInfo(ctx context.Context) (context.Context, func() RequestInfo)
}

// Routes is a compiled route table (router.Table); the data plane only
// passes it back to the engine.
type Routes any

// Upstreams is the set of clusters of one snapshot (upstream.Set).
type Upstreams interface {
	// DialTCP opens a connection to an endpoint of cluster; originalDst is
	// used by ORIGINAL_DST clusters.
	DialTCP(ctx context.Context, cluster string, originalDst netip.AddrPort) (net.Conn, Workload, error)
	// ClusterInfo describes a cluster's service; ok is false when the
	// cluster does not exist.
	ClusterInfo(cluster string) (info ClusterInfo, ok bool)
	// Release tells the set that next replaced it; it frees what next did
	// not take over once in-flight users are done.
	Release(next Upstreams)
}

// ClusterInfo is the service a cluster stands for (from the cluster's istio
// metadata).
type ClusterInfo struct {
	ServiceHost, ServiceName, ServiceNamespace, Subset string
}

// Workload identifies an upstream endpoint (from its istio metadata).
type Workload struct {
	Name, Namespace, Canonical, Revision, Cluster string
}

// RequestInfo is what the engine did with one request.
type RequestInfo struct {
	RouteName     string
	ClusterName   string
	Cluster       ClusterInfo
	Upstream      *Workload // nil when no endpoint was picked
	UpstreamHost  string    // address of the endpoint, "" if none
	ResponseFlags string    // Envoy's short flags (UH, UF, NR, ...), "" = none
	// Operation is the route's decorator.operation (span name), if any.
	Operation string
}
