package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// upstreamSet adapts the proxy's cluster set (internal/proxy/upstream) to
// Upstreams.
type upstreamSet struct {
	set *upstream.Set
}

// BuildUpstreams builds an upstream.Set for snap; it is the BuildUpstreams
// half of an Engine backed by internal/proxy/upstream.
func BuildUpstreams(snap *config.Snapshot, prev Upstreams, secrets config.Secrets, log *slog.Logger) (Upstreams, error) {
	s, err := upstream.Build(snap, UpstreamSetOf(prev), secrets, log)
	if err != nil {
		return nil, err
	}
	return &upstreamSet{set: s}, nil
}

// UpstreamSetOf returns the upstream.Set behind u (nil if u is not one).
func UpstreamSetOf(u Upstreams) *upstream.Set {
	if s, ok := u.(*upstreamSet); ok {
		return s.set
	}
	return nil
}

func (u *upstreamSet) DialTCP(ctx context.Context, cluster string, originalDst netip.AddrPort) (net.Conn, Workload, error) {
	c := u.set.Get(cluster)
	if c == nil {
		return nil, Workload{}, fmt.Errorf("cluster %s not found", cluster)
	}
	conn, h, err := c.DialTCP(ctx, upstream.RequestOptions{OriginalDst: originalDst})
	if err != nil {
		return nil, Workload{}, err
	}
	var w Workload
	if h != nil {
		w.Name, w.Namespace, w.Canonical, w.Revision = h.Workload()
		w.Cluster = h.WorkloadCluster()
	}
	return conn, w, nil
}

func (u *upstreamSet) ClusterInfo(cluster string) (ClusterInfo, bool) {
	c := u.set.Get(cluster)
	if c == nil {
		return ClusterInfo{}, false
	}
	i := c.Info()
	return ClusterInfo{ServiceHost: i.ServiceHost, ServiceName: i.ServiceName, ServiceNamespace: i.ServiceNamespace, Subset: i.Subset}, true
}

func (u *upstreamSet) Release(next Upstreams) {
	u.set.Release(UpstreamSetOf(next))
}
