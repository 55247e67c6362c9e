package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/mizzen-mesh/mizzen/internal/proxy/rawio"
)

// pool holds the connections to one host: an HTTP/1.1 keep-alive pool and
// an HTTP/2 (TLS or h2c) connection pool, created on first use.
type pool struct {
	dial    func(ctx context.Context) (net.Conn, error) // HTTP/1.1
	dialH2  func(ctx context.Context) (net.Conn, error)
	dialTCP func(ctx context.Context) (net.Conn, error) // TCP proxying

	h1conns *h1Pool // requests
	h1once  sync.Once
	h1      *http.Transport // upgrades (websocket, CONNECT)
	h2once  sync.Once
	h2      *http2.Transport
	h2pool  *streamLimitPool // with max_concurrent_streams
	cfg     *clusterConfig
}

// ensurePool gives a host state its pool the first time it is used.
func (hs *hostState) ensurePool(c *Cluster, h *Host) {
	if hs.pool != nil {
		return
	}
	hs.pool = newPool(c.cfg, c.state, h.Address(), h.socket)
}

func newPool(cfg *clusterConfig, cs *clusterState, addr string, sock *tlsSocket) *pool {
	p := &pool{cfg: cfg}
	// ALPN per codec: an HTTP/1.1 connection never offers "h2" (the
	// server would then speak HTTP/2), an HTTP/2 connection always does
	// (gRPC servers require it), like Envoy's per-codec ALPN; HTTP ones
	// on mesh mTLS say so with "istio-http/1.1" or "istio-h2".
	tcp, h1, h2 := sock, sock, sock
	if sock != nil {
		tcp, h1, h2 = sock.withALPN(codecTCP), sock.withALPN(codecHTTP1), sock.withALPN(codecHTTP2)
	}
	p.dialTCP = func(ctx context.Context) (net.Conn, error) {
		return dialHost(ctx, cfg, cs, addr, tcp)
	}
	p.dial = func(ctx context.Context) (net.Conn, error) {
		return dialHost(ctx, cfg, cs, addr, h1)
	}
	p.dialH2 = func(ctx context.Context) (net.Conn, error) {
		return dialHost(ctx, cfg, cs, addr, h2)
	}
	p.h1conns = newH1Pool(p.dial, cfg)
	return p
}

// dialHost connects (and handshakes TLS) within connect_timeout; failures
// are *ConnectError. The returned conn counts toward the cluster's open
// connections until closed.
func dialHost(ctx context.Context, cfg *clusterConfig, cs *clusterState, addr string, sock *tlsSocket) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, cfg.network, addr)
	if err != nil {
		return nil, connectError(ctx, addr, err)
	}
	conn = rawio.Wrap(conn)
	raw := conn
	if sock != nil {
		tc := tls.Client(conn, sock.clientConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, connectError(ctx, addr, err)
		}
		conn = tc
	}
	cs.connections.Add(1)
	return &countedConn{Conn: conn, raw: raw, cs: cs}, nil
}

func connectError(ctx context.Context, addr string, err error) error {
	var ne net.Error
	timeout := errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	return &ConnectError{Addr: addr, Timeout: timeout, Err: err}
}

type countedConn struct {
	net.Conn
	raw  net.Conn // the TCP connection under TLS
	cs   *clusterState
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.cs.connections.Add(-1) })
	return c.Conn.Close()
}

// ConnectionState exposes the TLS state of a TLS connection (for
// http.Response.TLS and for callers of DialTCP).
func (c *countedConn) ConnectionState() (tls.ConnectionState, bool) {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

func (p *pool) http1() *http.Transport {
	p.h1once.Do(func() {
		t := &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return p.dial(ctx)
			},
			// The dialled conn may already be TLS; to net/http it is a
			// plain connection speaking HTTP/1.1.
			TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
			DisableCompression:  true,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     p.cfg.idleTimeout,
			DisableKeepAlives:   p.cfg.maxReqPerConn == 1,
		}
		if p.cfg.maxConnections < defaultThreshold {
			// Requests beyond max_connections wait for a connection: they
			// are the pending requests max_pending_requests bounds.
			t.MaxConnsPerHost = int(max(p.cfg.maxConnections, 1))
		}
		p.h1 = t
	})
	return p.h1
}

func (p *pool) http2() *http2.Transport {
	p.h2once.Do(func() {
		p.h2 = &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				return p.dialH2(ctx)
			},
			DisableCompression: true,
			IdleConnTimeout:    p.cfg.idleTimeout,
			ReadIdleTimeout:    30 * time.Second,
			PingTimeout:        15 * time.Second,
		}
		if p.cfg.maxStreams > 0 {
			p.h2pool = &streamLimitPool{t: p.h2, dial: p.dialH2, max: p.cfg.maxStreams}
			p.h2.ConnPool = p.h2pool
		}
	})
	return p.h2
}

// streamLimitPool is an HTTP/2 connection pool that opens another
// connection when every connection carries max_concurrent_streams
// streams, like Envoy.
type streamLimitPool struct {
	t    *http2.Transport
	dial func(ctx context.Context) (net.Conn, error)
	max  int

	mu    sync.Mutex
	conns []*http2.ClientConn
}

func (sp *streamLimitPool) GetClientConn(req *http.Request, _ string) (*http2.ClientConn, error) {
	// The lock is held while dialling, so concurrent requests wait for
	// the new connection's capacity instead of each opening one.
	sp.mu.Lock()
	defer sp.mu.Unlock()
	live := sp.conns[:0]
	var pick *http2.ClientConn
	for _, cc := range sp.conns {
		st := cc.State()
		if st.Closed {
			continue
		}
		live = append(live, cc)
		if pick == nil && !st.Closing && st.StreamsActive+st.StreamsReserved+st.StreamsPending < sp.max && cc.ReserveNewRequest() {
			pick = cc
		}
	}
	sp.conns = live
	if pick != nil {
		return pick, nil
	}
	conn, err := sp.dial(req.Context())
	if err != nil {
		return nil, err
	}
	cc, err := sp.t.NewClientConn(conn)
	if err != nil {
		conn.Close()
		return nil, &ConnectError{Addr: conn.RemoteAddr().String(), Err: err}
	}
	if !cc.ReserveNewRequest() {
		cc.Close()
		return nil, errors.New("new HTTP/2 connection refuses streams")
	}
	sp.conns = append(sp.conns, cc)
	return cc, nil
}

func (sp *streamLimitPool) MarkDead(dead *http2.ClientConn) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for i, cc := range sp.conns {
		if cc == dead {
			sp.conns = append(sp.conns[:i], sp.conns[i+1:]...)
			return
		}
	}
}

func (sp *streamLimitPool) closeIdle() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, cc := range sp.conns {
		if st := cc.State(); st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0 {
			cc.Close()
		}
	}
}

func (p *pool) closeIdle() {
	if p == nil {
		return
	}
	p.h1conns.closeIdle()
	if p.h1 != nil {
		p.h1.CloseIdleConnections()
	}
	if p.h2 != nil {
		p.h2.CloseIdleConnections()
	}
	if p.h2pool != nil {
		p.h2pool.closeIdle()
	}
}
