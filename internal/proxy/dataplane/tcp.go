package dataplane

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// tcpProxy is a built tcp_proxy with the network filters before it.
type tcpProxy struct {
	cluster   string
	weighted  []weightedCluster
	total     uint32
	idle      time.Duration
	rbac      []*rbac.Engine
	stats     *statsConfig
	accessLog []*accessLog
}

type weightedCluster struct {
	name   string
	weight uint32
}

func (d *Dataplane) newTCPProxy(cfg *tcpv3.TcpProxy, netRBAC []*rbac.Engine, stats *statsConfig) (*tcpProxy, error) {
	t := &tcpProxy{rbac: netRBAC, stats: stats, idle: time.Hour}
	switch cs := cfg.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		t.cluster = cs.Cluster
	case *tcpv3.TcpProxy_WeightedClusters:
		for _, c := range cs.WeightedClusters.GetClusters() {
			t.weighted = append(t.weighted, weightedCluster{name: c.GetName(), weight: c.GetWeight()})
			t.total += c.GetWeight()
		}
		if t.total == 0 {
			return nil, fmt.Errorf("weighted_clusters have no weight")
		}
	default:
		return nil, fmt.Errorf("cluster specifier %T is not supported", cs)
	}
	if it := cfg.GetIdleTimeout(); it != nil {
		t.idle = it.AsDuration() // 0 disables
	}
	for i, al := range cfg.GetAccessLog() {
		l, err := newAccessLog(al)
		if err != nil {
			return nil, fmt.Errorf("access_log %d: %w", i, err)
		}
		t.accessLog = append(t.accessLog, l)
	}
	return t, nil
}

func (t *tcpProxy) pick() string {
	if len(t.weighted) == 0 {
		return t.cluster
	}
	n := rand.Uint32N(t.total)
	for _, c := range t.weighted {
		if n < c.weight {
			return c.name
		}
		n -= c.weight
	}
	return t.weighted[len(t.weighted)-1].name
}

// tcpConn is a proxied connection pair, tracked for draining.
type tcpConn struct {
	down, up net.Conn
	once     sync.Once
}

func (c *tcpConn) close() {
	c.once.Do(func() {
		c.down.Close()
		if c.up != nil {
			c.up.Close()
		}
	})
}

func (d *Dataplane) proxyTCP(t *tcpProxy, down net.Conn, ci *connInfo, st *state) {
	start := time.Now()
	q := &rbac.Request{
		Principal: ci.principal, DirectRemoteIP: ci.src.Addr(), RemoteIP: ci.src.Addr(),
		DestinationIP: ci.dst.Addr(), DestinationPort: ci.dst.Port(), ServerName: ci.sni,
	}
	for _, e := range t.rbac {
		if dec := e.Evaluate(q); !dec.Allowed {
			d.log.Debug("network rbac denied", "listener", ci.listener, "policy", dec.Policy, "principal", ci.principal)
			down.Close()
			return
		}
	}
	cluster := t.pick()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	up, wl, err := st.upstreams.DialTCP(ctx, cluster, ci.dst)
	cancel()
	ri := RequestInfo{ClusterName: cluster}
	if info, ok := st.upstreams.ClusterInfo(cluster); ok {
		ri.Cluster = info
	}
	if err != nil {
		d.log.Debug("tcp upstream connect failed", "cluster", cluster, "error", err)
		ri.ResponseFlags = "UF"
		d.recordTCP(t, ci, ri, nil, 0, 0, true)
		d.logTCP(t, ci, ri, start, 0, 0)
		down.Close()
		return
	}
	ri.UpstreamHost = up.RemoteAddr().String()
	ri.Upstream = &wl
	tc := &tcpConn{down: down, up: up}
	d.tcpConns.Store(tc, struct{}{})
	defer d.tcpConns.Delete(tc)
	d.recordTCPOpen(t, ci, ri)

	var sent, received atomic.Int64 // to and from the downstream
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	if t.idle > 0 {
		go func() {
			tick := time.NewTicker(min(t.idle/4+time.Millisecond, time.Second))
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					if time.Since(time.Unix(0, last.Load())) > t.idle {
						tc.close()
						return
					}
				}
			}
		}()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn, n *atomic.Int64) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:k]); werr != nil {
					break
				}
				n.Add(int64(k))
			}
			if err != nil {
				break
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
		tc.close()
	}
	go cp(up, down, &received)
	go cp(down, up, &sent)
	wg.Wait()
	close(done)
	tc.close()
	d.recordTCP(t, ci, ri, &wl, sent.Load(), received.Load(), false)
	d.logTCP(t, ci, ri, start, received.Load(), sent.Load())
}

func (d *Dataplane) tcpLabels(t *tcpProxy, ci *connInfo, ri RequestInfo, up *Workload) []string {
	self := nodePeer(d.opts.Node)
	td := d.opts.Node.TrustDomain
	l := statLabels{protocol: "tcp", code: "0", flags: ri.ResponseFlags, service: ri.Cluster}
	if t.stats.inbound() {
		l.reporter = "destination"
		l.src = peerFromPrincipal(ci.principal)
		l.srcPrincipal = ci.principal
		l.dst, l.dstPrincipal = self, principalOf(td, self)
		l.security = "none"
		if ci.principal != "" {
			l.security = "mutual_tls"
		}
	} else {
		l.reporter = "source"
		l.src, l.srcPrincipal = self, principalOf(td, self)
		if up != nil && up.Name != "" {
			l.dst = &peer{Workload: up.Name, Namespace: up.Namespace, ClusterID: up.Cluster,
				Labels: map[string]string{"service.istio.io/canonical-name": up.Canonical, "service.istio.io/canonical-revision": up.Revision}}
		}
		l.security = "unknown"
	}
	return l.values()
}

func (d *Dataplane) recordTCPOpen(t *tcpProxy, ci *connInfo, ri RequestInfo) {
	if t.stats == nil {
		return
	}
	d.metrics.tcpOpened.WithLabelValues(d.tcpLabels(t, ci, ri, ri.Upstream)...).Inc()
}

func (d *Dataplane) recordTCP(t *tcpProxy, ci *connInfo, ri RequestInfo, up *Workload, sent, received int64, failed bool) {
	if t.stats == nil {
		return
	}
	vals := d.tcpLabels(t, ci, ri, up)
	if failed {
		d.metrics.tcpOpened.WithLabelValues(vals...).Inc()
	}
	d.metrics.tcpSent.WithLabelValues(vals...).Add(float64(sent))
	d.metrics.tcpReceived.WithLabelValues(vals...).Add(float64(received))
	d.metrics.tcpClosed.WithLabelValues(vals...).Inc()
}

func (d *Dataplane) logTCP(t *tcpProxy, ci *connInfo, ri RequestInfo, start time.Time, in, out int64) {
	if len(t.accessLog) == 0 {
		return
	}
	e := &logEntry{ci: ci, ri: ri, start: start, dur: time.Since(start), bytesIn: in, bytesOut: out}
	for _, l := range t.accessLog {
		l.write(e)
	}
}

// waitTCP waits for proxied TCP connections to end, closing them when ctx
// ends.
func (d *Dataplane) waitTCP(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		n := 0
		d.tcpConns.Range(func(any, any) bool { n++; return true })
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			d.tcpConns.Range(func(k, _ any) bool { k.(*tcpConn).close(); return true })
			return fmt.Errorf("draining %d tcp connections: %w", n, ctx.Err())
		case <-tick.C:
		}
	}
}

var _ = io.EOF
