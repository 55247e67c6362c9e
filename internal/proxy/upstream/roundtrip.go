package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
)

// RequestOptions steer one host choice.
type RequestOptions struct {
	// HashKey is the route's hash policy result for RING_HASH and MAGLEV.
	HashKey uint64
	HasHash bool
	// OriginalDst is the destination of the captured connection, used by
	// ORIGINAL_DST clusters.
	OriginalDst netip.AddrPort
	// Attempt counts from 1; PreviousHosts are the hosts of earlier
	// attempts, avoided when another host is available.
	Attempt       int
	PreviousHosts []*Host
}

// RoundTrip sends req to a host of the cluster. req.URL.Path, RawQuery,
// req.Host and the headers are sent as they are; the scheme and address
// are the host's. The returned response body must be closed: until then
// the request counts as active (max_requests, least request). A non-nil
// host is returned whenever one was picked, also with an error.
func (c *Cluster) RoundTrip(req *http.Request, opts RequestOptions) (*http.Response, *Host, error) {
	h, err := c.pick(opts)
	if err != nil {
		return nil, nil, err
	}
	if err := c.admit(req); err != nil {
		return nil, h, err
	}
	h.state.active.Add(1)
	// The request is active (max_requests, least request) until its
	// response body ends; body.end is the one place that says so.
	body := &activeBody{c: c, h: h}

	var rt http.RoundTripper
	h1pool := false
	switch {
	case c.useHTTP2(req):
		rt = h.state.pool.http2()
	case !isUpgrade(req) && req.Method != http.MethodConnect:
		rt, h1pool = h.state.pool.h1conns, true
	default:
		rt = h.state.pool.http1()
	}
	out := req
	if !h1pool || req.Host == "" {
		// net/http's transports dial the URL's host: a copy with the
		// host's address. The HTTP/1.1 pool is the host's already and
		// writes only the path, Host and headers.
		out = new(http.Request)
		*out = *req
		u := *req.URL
		u.Scheme = "http" // the pool's dialer adds TLS when configured
		u.Host = h.Address()
		out.URL = &u
		if out.Host == "" {
			out.Host = h.Address()
		}
	}
	resp, err := rt.RoundTrip(out)
	if err != nil {
		body.end()
		return nil, h, c.classify(req.Context(), h, err)
	}
	c.record(h, outcomeOf(resp.StatusCode))
	body.ReadCloser = resp.Body
	resp.Body = body
	return resp, h, nil
}

// useHTTP2 decides the protocol of one request.
func (c *Cluster) useHTTP2(req *http.Request) bool {
	if isUpgrade(req) {
		return false // upgrades (websocket) are HTTP/1.1
	}
	switch c.cfg.protocol {
	case HTTP2:
		return true
	case Downstream:
		return req.ProtoMajor == 2
	}
	return false
}

// RoundTrip lets the HTTP/1.1 pool stand where a transport does.
func (p *h1Pool) RoundTrip(req *http.Request) (*http.Response, error) { return p.roundTrip(req) }

func isUpgrade(req *http.Request) bool {
	return httphead.Get(req.Header, "Upgrade") != ""
}

// admit applies max_requests and, for HTTP/1.1, max_pending_requests
// (requests beyond max_connections wait for a connection).
// A nil error counts the request in the cluster's active requests until
// its activeBody ends.
func (c *Cluster) admit(req *http.Request) error {
	n := c.state.active.Add(1)
	over := n > c.cfg.maxRequests
	if !c.useHTTP2(req) && n > c.cfg.maxConnections+c.cfg.maxPending {
		over = true
	}
	if over {
		c.state.active.Add(-1)
		return ErrOverflow
	}
	return nil
}

// classify turns a transport error into the package's errors and feeds
// outlier detection.
func (c *Cluster) classify(ctx context.Context, h *Host, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			c.record(h, outcomeGateway) // timeouts count as gateway failures
		}
		return ctxErr
	}
	var ce *ConnectError
	if errors.As(err, &ce) {
		c.record(h, outcomeGateway)
		return ce
	}
	c.record(h, outcomeGateway)
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return &ResetError{RefusedStream: true, Err: err}
	}
	return &ResetError{Err: err}
}

// activeBody ends the request's accounting when the body is closed or
// read to the end.
type activeBody struct {
	io.ReadCloser
	c     *Cluster
	h     *Host
	ended atomic.Bool
}

// end takes the request out of the active counts, once.
func (b *activeBody) end() {
	if b.ended.CompareAndSwap(false, true) {
		b.h.state.active.Add(-1)
		b.c.state.active.Add(-1)
	}
}

func (b *activeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *activeBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// Write lets a 101 Switching Protocols body (an io.ReadWriteCloser from
// net/http) be written to through the wrapper.
func (b *activeBody) Write(p []byte) (int, error) {
	if w, ok := b.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("upstream body is not writable")
}

// DialTCP opens a connection to a host of the cluster (TLS per the
// cluster's transport socket), for tcp_proxy. It counts toward
// max_connections until closed.
func (c *Cluster) DialTCP(ctx context.Context, opts RequestOptions) (net.Conn, *Host, error) {
	h, err := c.pick(opts)
	if err != nil {
		return nil, nil, err
	}
	if c.state.connections.Load() >= c.cfg.maxConnections {
		return nil, h, ErrOverflow
	}
	h.state.active.Add(1)
	conn, err := h.state.pool.dialTCP(ctx)
	if err != nil {
		h.state.active.Add(-1)
		c.record(h, outcomeGateway)
		return nil, h, err
	}
	c.record(h, outcomeSuccess)
	return &activeConn{Conn: conn, h: h}, h, nil
}

type activeConn struct {
	net.Conn
	h    *Host
	once sync.Once
}

func (c *activeConn) Close() error {
	c.once.Do(func() { c.h.state.active.Add(-1) })
	return c.Conn.Close()
}
