package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
)

// h1Pool is the HTTP/1.1 keep-alive pool of one host. Unlike
// net/http.Transport, which hands every request to a writer and a reader
// goroutine of the connection, the goroutine that sends a request writes
// it and reads the response itself: a request costs no goroutine switch
// and, when its body is small and known, one write. The connection goes
// back to the pool when the response body has been read to the end.
//
// Limits: at most maxConns connections (requests beyond it wait for one,
// they are max_pending_requests); a connection carries at most maxReqs
// requests (max_requests_per_connection; the last one asks the server to
// close); an idle connection is closed after idleTimeout. Upgrades
// (websocket) and HTTP/2 do not use it.
type h1Pool struct {
	dial        func(ctx context.Context) (net.Conn, error)
	maxConns    int    // 0: unlimited
	maxReqs     uint32 // 0: unlimited
	idleTimeout time.Duration

	mu      sync.Mutex
	idle    []*h1Conn // oldest first
	open    int
	waiters []chan *h1Conn // FIFO; nil sent means "a slot freed, try again"
	sweep   *time.Timer
}

// h1SyncBody is the largest request body written by the requesting
// goroutine before it reads the response; larger bodies and bodies of
// unknown length are written by a goroutine of their own, so the
// response can arrive while the body is still being sent.
const (
	h1ReadBuffer  = 8 << 10
	h1WriteBuffer = 8 << 10
)

type h1Conn struct {
	p        *h1Pool
	conn     net.Conn
	peek     *peeker // of the TCP connection, for the liveness check; nil when it is not one
	br       *bufio.Reader
	bw       *bufio.Writer
	requests uint32
	idleAt   time.Time
	heads    httphead.Reader
}

func newH1Pool(dial func(ctx context.Context) (net.Conn, error), cfg *clusterConfig) *h1Pool {
	p := &h1Pool{dial: dial, maxReqs: cfg.maxReqPerConn, idleTimeout: cfg.idleTimeout}
	if cfg.maxConnections < defaultThreshold {
		// Requests beyond max_connections wait for a connection: they
		// are the pending requests max_pending_requests bounds.
		p.maxConns = int(max(cfg.maxConnections, 1))
	}
	if p.idleTimeout <= 0 {
		p.idleTimeout = defaultIdleTimeout
	}
	return p
}

func (p *h1Pool) newConn(c net.Conn) *h1Conn {
	cc := &h1Conn{p: p, conn: c, br: bufio.NewReaderSize(c, h1ReadBuffer), bw: bufio.NewWriterSize(c, h1WriteBuffer)}
	raw := c
	if cn, ok := c.(*countedConn); ok && cn.raw != nil {
		raw = cn.raw
	}
	if sc, ok := raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cc.peek = newPeeker(rc)
		}
	}
	return cc
}

// get returns an idle connection (reused true) or a new one, waiting for
// one when maxConns are open.
func (p *h1Pool) get(ctx context.Context) (cc *h1Conn, reused bool, err error) {
	for {
		p.mu.Lock()
		if n := len(p.idle); n > 0 {
			cc := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			if time.Since(cc.idleAt) < p.idleTimeout && cc.alive() {
				return cc, true, nil
			}
			p.discard(cc)
			continue
		}
		if p.maxConns <= 0 || p.open < p.maxConns {
			p.open++
			p.mu.Unlock()
			c, err := p.dial(ctx)
			if err != nil {
				p.mu.Lock()
				p.open--
				p.wakeLocked()
				p.mu.Unlock()
				return nil, false, err
			}
			return p.newConn(c), false, nil
		}
		w := make(chan *h1Conn, 1)
		p.waiters = append(p.waiters, w)
		p.mu.Unlock()
		select {
		case cc := <-w:
			if cc != nil {
				return cc, true, nil
			}
		case <-ctx.Done():
			p.mu.Lock()
			for i, o := range p.waiters {
				if o == w {
					p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
					w = nil
					break
				}
			}
			p.mu.Unlock()
			if w != nil {
				// Handed something while giving up: pass it on.
				if cc := <-w; cc != nil {
					p.put(cc)
				} else {
					p.mu.Lock()
					p.wakeLocked()
					p.mu.Unlock()
				}
			}
			return nil, false, ctx.Err()
		}
	}
}

// wakeLocked tells the first waiter that a connection slot is free.
func (p *h1Pool) wakeLocked() {
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w <- nil
	}
}

// put makes a connection idle, or hands it to a waiting request.
func (p *h1Pool) put(cc *h1Conn) {
	p.mu.Lock()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- cc
		return
	}
	cc.idleAt = time.Now()
	p.idle = append(p.idle, cc)
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.idleTimeout, p.sweepIdle)
	}
	p.mu.Unlock()
}

// discard closes a connection that is not going back to the pool.
func (p *h1Pool) discard(cc *h1Conn) {
	_ = cc.conn.Close()
	p.mu.Lock()
	p.open--
	p.wakeLocked()
	p.mu.Unlock()
}

// sweepIdle closes the connections idle for idleTimeout.
func (p *h1Pool) sweepIdle() {
	now := time.Now()
	p.mu.Lock()
	var old []*h1Conn
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleAt) >= p.idleTimeout {
		i++
	}
	old = append(old, p.idle[:i]...)
	p.idle = append(p.idle[:0], p.idle[i:]...)
	if len(p.idle) > 0 {
		p.sweep.Reset(p.idleTimeout - now.Sub(p.idle[0].idleAt))
	} else {
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, cc := range old {
		p.discard(cc)
	}
}

func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, cc := range idle {
		p.discard(cc)
	}
}

// alive reports whether an idle connection can carry a request: the
// server has neither closed it nor sent anything unexpected.
func (cc *h1Conn) alive() bool {
	if cc.br.Buffered() > 0 {
		return false
	}
	if cc.peek == nil {
		return true
	}
	return cc.peek.check()
}

var errBodyLength = errors.New("request body length differs from Content-Length")

// roundTrip sends req on a pooled connection. A request without body
// that fails on a reused connection before any response byte arrived
// (the server closed it meanwhile) is sent once more on a new one.
func (p *h1Pool) roundTrip(req *http.Request) (*http.Response, error) {
	for try := 0; ; try++ {
		resp, reused, nothingRead, err := p.send(req)
		if err != nil && reused && nothingRead && try == 0 && (req.Body == nil || req.Body == http.NoBody) && req.Context().Err() == nil {
			continue
		}
		return resp, err
	}
}

func (p *h1Pool) send(req *http.Request) (resp *http.Response, reused, nothingRead bool, err error) {
	ctx := req.Context()
	cc, reused, err := p.get(ctx)
	if err != nil {
		return nil, false, false, err
	}
	cc.requests++
	closeAfter := p.maxReqs > 0 && cc.requests >= p.maxReqs
	// Cancellation closes the connection: a read or write in progress
	// fails at once, and the connection is not reused.
	stop := context.AfterFunc(ctx, func() { _ = cc.conn.Close() })
	fail := func(err error) (*http.Response, bool, bool, error) {
		stop()
		p.discard(cc)
		return nil, reused, nothingRead, err
	}

	hasBody := req.Body != nil && req.Body != http.NoBody
	cl := req.ContentLength
	if !hasBody {
		cl = 0
	}
	if hasConnectionClose(req.Header) {
		closeAfter = true
	}
	if err := writeRequestHead(cc.bw, req, cl, hasBody, closeAfter); err != nil {
		return fail(err)
	}
	var wdone chan error
	switch {
	case !hasBody:
	case cl > 0 && cl <= int64(cc.bw.Available()):
		n, err := io.CopyN(cc.bw, req.Body, cl)
		if err != nil && !(err == io.EOF && n == cl) {
			if err == io.EOF {
				err = errBodyLength
			}
			return fail(err)
		}
	default:
		if err := cc.bw.Flush(); err != nil {
			return fail(err)
		}
		wdone = make(chan error, 1)
		go func() {
			err := writeBody(cc.bw, req.Body, cl)
			if err != nil {
				_ = cc.conn.Close() // the response read fails too
			}
			wdone <- err
		}()
	}
	if wdone == nil {
		if err := cc.bw.Flush(); err != nil {
			return fail(err)
		}
	}
	nothingRead = true
	for {
		if _, err := cc.br.Peek(1); err != nil {
			return fail(err)
		}
		nothingRead = false
		resp, err = cc.heads.ReadResponse(cc.br, req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx interim responses (100 Continue) are not forwarded.
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Upgrades use the other pool; a 101 here leaves the
		// connection in an unknown protocol.
		closeAfter = true
	}
	resp.Body = &h1Body{cc: cc, body: resp.Body, stop: stop, wdone: wdone, closeAfter: closeAfter || resp.Close}
	return resp, reused, false, nil
}

func hasConnectionClose(h http.Header) bool {
	for _, v := range h["Connection"] {
		if httpguts.HeaderValuesContainsToken([]string{v}, "close") {
			return true
		}
	}
	return false
}

// writeRequestHead writes the request line and headers. Framing
// (Content-Length, Transfer-Encoding) follows net/http's client: a known
// length, chunked when unknown, "Content-Length: 0" for POST, PUT and
// PATCH without a body.
func writeRequestHead(bw *bufio.Writer, req *http.Request, cl int64, hasBody, closeAfter bool) error {
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("invalid Host header %q", host)
	}
	uri := "/"
	if req.URL != nil {
		uri = req.URL.RequestURI()
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid header field value for %q", k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case hasBody && cl < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case cl > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), max(cl, 0), 10))
		bw.WriteString("\r\n")
	}
	if closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeBody sends a body: exactly cl bytes, or chunked when cl < 0; each
// chunk is flushed as it is read (streams).
func writeBody(bw *bufio.Writer, body io.Reader, cl int64) error {
	if cl >= 0 {
		n, err := io.CopyN(bw, body, cl)
		if err == io.EOF && n < cl {
			err = errBodyLength
		}
		if err == nil || (err == io.EOF && n == cl) {
			err = bw.Flush()
		}
		return err
	}
	buf := make([]byte, 16<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			bw.WriteString(strconv.FormatInt(int64(n), 16))
			bw.WriteString("\r\n")
			bw.Write(buf[:n])
			bw.WriteString("\r\n")
			if ferr := bw.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			bw.WriteString("0\r\n\r\n")
			return bw.Flush()
		}
		if err != nil {
			return err
		}
	}
}

// h1Body is a response body; at its end the connection returns to the
// pool (or is closed when it cannot carry another request).
type h1Body struct {
	cc         *h1Conn
	body       io.ReadCloser
	stop       func() bool
	wdone      chan error // the body writer's result; nil when written inline
	closeAfter bool
	mu         sync.Mutex
	done       bool
	err        error
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		if b.err == nil {
			return 0, io.EOF
		}
		return 0, b.err
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.finish(true, nil)
	case err != nil:
		b.finish(false, err)
	}
	return n, err
}

// Close before the end closes the connection: the rest of the body is
// not read.
func (b *h1Body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		// An empty body (HEAD, 204, 304, length 0) is at its end.
		b.finish(b.body == http.NoBody, errors.New("read on closed response body"))
	}
	return nil
}

func (b *h1Body) finish(reuse bool, err error) {
	b.done, b.err = true, err
	if !b.stop() {
		reuse = false // cancelled: the connection is closed
	}
	if b.wdone != nil {
		select {
		case werr := <-b.wdone:
			reuse = reuse && werr == nil
		default:
			reuse = false // the request body is still being sent
		}
	}
	if reuse && !b.closeAfter {
		b.cc.p.put(b.cc)
	} else {
		b.cc.p.discard(b.cc)
	}
}
