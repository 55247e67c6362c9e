package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
)

// The HTTP/1.1 server loop of the data plane. Connections known to speak
// HTTP/1.1 (TLS without "h2" negotiated, plaintext without the HTTP/2
// preface) are served here rather than by net/http's server: requests
// are read and answered by the connection's own goroutine, with no
// background reader per request and, for a complete small response, one
// write. HTTP/2 (TLS h2, h2c prior knowledge) stays with net/http; an
// "Upgrade: h2c" request is served by the h2c handler, which takes the
// connection over.
//
// What it keeps from net/http's server: keep-alive with the idle timeout,
// the request headers timeout, a 1 MiB header limit (431), 400 for
// malformed requests, "Expect: 100-continue" (100 sent when the handler
// reads the body), chunked request and response bodies with trailers,
// Content-Length set for responses the handler completes within the
// buffer, HEAD/204/304 without body, Connection: close and HTTP/1.0,
// Flusher, Hijacker, full duplex, and the request context cancelled when
// the client goes away while the handler runs (noticed after
// h1WatchAfter, by a reader started only for requests that take that
// long).

const (
	h1MaxHeaderBytes = 1 << 20
	h1ReadBuffer     = 4 << 10
	h1WriteBuffer    = 8 << 10
	h1PendingMax     = 4 << 10   // response bytes held to learn the length
	h1DiscardMax     = 256 << 10 // unread request body drained to keep the connection
	// h1WatchAfter is when a request still running starts watching for
	// the client closing the connection.
	h1WatchAfter = 50 * time.Millisecond
)

// h1Conn states.
const (
	h1Idle int32 = iota
	h1Active
	h1Closed
)

type h1ServerConn struct {
	s       *hcmServer
	conn    net.Conn
	lr      *limitReader
	br      *bufio.Reader
	bw      *bufio.Writer
	info    *connInfo
	ctx     context.Context
	cancel  context.CancelFunc
	remote  string
	tls     *tls.ConnectionState
	state   atomic.Int32
	pending []byte
	heads   httphead.Reader

	hijacked bool

	// The watcher of the running request (see h1WatchAfter).
	watchMu   sync.Mutex
	watchCur  *h1Response // nil once the handler returned
	watchDone chan struct{}
}

// limitReader caps what the header parser may read.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

var errHeaderTooLarge = errors.New("request headers too large")

// drainThen reads what br holds, then r.
type drainThen struct {
	br *bufio.Reader
	r  io.Reader
}

func (d *drainThen) Read(p []byte) (int, error) {
	if d.br.Buffered() > 0 {
		return d.br.Read(p)
	}
	return d.r.Read(p)
}

// h1Eligible reports whether a connection is HTTP/1.1 for this server's
// codec, peeking at plaintext for the HTTP/2 preface; br is the buffered
// reader to serve it with (nil: make one).
func (s *hcmServer) h1Eligible(c net.Conn) (ok bool, br *bufio.Reader) {
	if !s.http1 {
		return false, nil
	}
	if tc, isTLS := c.(*tls.Conn); isTLS {
		return tc.ConnectionState().NegotiatedProtocol != "h2", nil
	}
	bc, _ := c.(*bufConn)
	if bc == nil {
		return !s.http2, nil
	}
	if !s.http2 {
		return true, bc.r
	}
	// Plaintext with h2c allowed: HTTP/2 starts with its preface, which
	// an HTTP/1 request line cannot.
	_ = c.SetReadDeadline(time.Now().Add(s.idle))
	defer c.SetReadDeadline(time.Time{})
	for n := 1; n <= len(h2Preface); {
		b, err := bc.r.Peek(n)
		if !bytes.HasPrefix(h2Preface, b) {
			return true, bc.r
		}
		if err != nil {
			return false, nil // net/http ends it the same way
		}
		n = max(len(b)+1, min(bc.r.Buffered(), len(h2Preface)))
	}
	return false, nil
}

// serveH1 runs the HTTP/1.1 loop of one connection until it closes;
// false when the server no longer takes connections.
func (s *hcmServer) serveH1(c net.Conn, br *bufio.Reader, info *connInfo) bool {
	sc := &h1ServerConn{s: s, conn: c, info: info, remote: c.RemoteAddr().String()}
	src := io.Reader(c)
	if bc, ok := c.(*bufConn); ok && br == bc.r {
		// The sniffed bytes first, then the connection itself.
		src = &drainThen{br: br, r: bc.Conn}
	}
	sc.lr = &limitReader{r: src, n: math.MaxInt64}
	sc.br = bufio.NewReaderSize(sc.lr, h1ReadBuffer)
	sc.bw = bufio.NewWriterSize(c, h1WriteBuffer)
	if tc, ok := c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		sc.tls = &cs
	}
	// One context for the connection's requests, cancelled when the
	// client goes away (see watch) or the connection ends: cheaper than
	// one per request, and the router derives its own per request.
	ctx := context.WithValue(context.Background(), http.LocalAddrContextKey, c.LocalAddr())
	ctx, cancel := context.WithCancel(context.WithValue(ctx, connInfoKey{}, info))
	defer cancel()
	sc.ctx, sc.cancel = ctx, cancel
	if !s.track(sc) {
		return false
	}
	defer func() {
		if !sc.hijacked {
			s.untrack(sc)
			c.Close()
		}
	}()
	for sc.serveOne() {
	}
	return true
}

// serveOne reads and answers one request; false ends the connection.
func (sc *h1ServerConn) serveOne() bool {
	s := sc.s
	if s.draining.Load() {
		return false
	}
	deadline := false
	if sc.br.Buffered() == 0 {
		_ = sc.conn.SetReadDeadline(time.Now().Add(s.idle))
		deadline = true
		if _, err := sc.br.Peek(1); err != nil {
			return false
		}
	}
	if !sc.state.CompareAndSwap(h1Idle, h1Active) {
		return false // closed while idle (draining)
	}
	// A head already buffered needs no read; otherwise the rest of it is
	// read within the header timeout, by net/http.
	req, buffered := sc.heads.BufferedRequest(sc.br)
	if !buffered {
		_ = sc.conn.SetReadDeadline(time.Now().Add(s.readHeaderTimeout))
		deadline = true
		sc.lr.n = h1MaxHeaderBytes + int64(sc.br.Buffered())
		var err error
		req, err = http.ReadRequest(sc.br)
		sc.lr.n = math.MaxInt64
		if err != nil {
			sc.badRequest(err)
			return false
		}
	}
	if deadline {
		_ = sc.conn.SetReadDeadline(time.Time{})
	}
	keep := sc.serveRequest(req)
	if !sc.state.CompareAndSwap(h1Active, h1Idle) {
		return false
	}
	return keep
}

func (sc *h1ServerConn) badRequest(err error) {
	var ne net.Error
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || (errors.As(err, &ne) && ne.Timeout()) {
		return
	}
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, errHeaderTooLarge):
		code = http.StatusRequestHeaderFieldsTooLarge
	case strings.Contains(err.Error(), "HTTP version"):
		code = http.StatusHTTPVersionNotSupported
	}
	_ = sc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	sc.reply(code, strconv.Itoa(code)+" "+http.StatusText(code))
}

// serveRequest runs the handler for req; it reports whether the
// connection can carry another request.
func (sc *h1ServerConn) serveRequest(req *http.Request) bool {
	s := sc.s
	w := &h1Response{sc: sc, req: req}
	newBody := func(expect bool) *h1Body {
		w.bodyStore = h1Body{ReadCloser: req.Body, w: w, expect: expect}
		return &w.bodyStore
	}
	switch {
	case req.ProtoMajor != 1:
		sc.reply(http.StatusHTTPVersionNotSupported, "HTTP version not supported")
		return false
	case req.ProtoMinor >= 1 && req.Host == "" && len(req.Header["Host"]) == 0:
		sc.reply(http.StatusBadRequest, "missing required Host header")
		return false
	}
	if hasToken(req.Header["Connection"], "close") || (req.ProtoMinor == 0 && !hasToken(req.Header["Connection"], "keep-alive")) {
		w.closeAfter = true
	}
	if ex := req.Header.Get("Expect"); ex != "" {
		if !strings.EqualFold(ex, "100-continue") || req.ProtoMinor == 0 {
			sc.reply(http.StatusExpectationFailed, "")
			return false
		}
		if req.Body != http.NoBody {
			w.body = newBody(true)
		}
	}
	if w.body == nil && req.Body != http.NoBody {
		w.body = newBody(false)
	}
	if w.body != nil {
		req.Body = w.body
	}
	req.RemoteAddr = sc.remote
	req.TLS = sc.tls
	ctx := sc.ctx
	w.cancel = sc.cancel
	direct := s.direct != nil && req.Method != "PRI" && req.Header["Upgrade"] == nil
	if !direct {
		// Through the handler chain (the h2c upgrade handler).
		req = req.WithContext(ctx)
	}

	sc.watchStart(w, w.body == nil)
	aborted := sc.runHandler(w, req, direct)
	watched := sc.watchEnd(w)
	if aborted || w.hijacked {
		return false
	}
	if watched && ctx.Err() != nil {
		return false // the watcher saw the client go away
	}
	if !w.finish() {
		return false
	}
	if w.closeAfter || s.draining.Load() {
		return false
	}
	// The rest of an unread request body is drained, within bounds.
	if w.body != nil && !w.body.eof {
		if w.body.expect && !w.sentContinue {
			return false // the client may never send it
		}
		n, err := io.CopyN(io.Discard, w.body.ReadCloser, h1DiscardMax+1)
		if n > h1DiscardMax || (err != nil && err != io.EOF) {
			return false
		}
	}
	return true
}

// runHandler calls the handler; true when it aborted (panicked), which
// resets the connection.
func (sc *h1ServerConn) runHandler(w *h1Response, req *http.Request, direct bool) (aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			aborted = true
			if p != http.ErrAbortHandler {
				sc.s.log.Error("http handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}
	}()
	if direct {
		// The connection manager itself, with the connection's context:
		// no copy of the request to attach it.
		sc.s.direct(w, req, sc.ctx)
		return false
	}
	sc.s.handler.ServeHTTP(w, req)
	return false
}

// reply answers a request the handler never sees, and closes.
func (sc *h1ServerConn) reply(code int, body string) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", code, http.StatusText(code), len(body), body)
	_, _ = sc.conn.Write(b.Bytes())
}

// watchStart registers the running request; its watcher is armed when
// the body is read (now, without one): if the handler is still running
// h1WatchAfter later, a goroutine reads ahead and cancels the request
// when the client goes away, like net/http's background read.
func (sc *h1ServerConn) watchStart(w *h1Response, bodyDone bool) {
	sc.watchMu.Lock()
	sc.watchCur, sc.watchDone = w, nil
	sc.watchMu.Unlock()
	if bodyDone {
		sc.armWatch(w)
	}
}

func (sc *h1ServerConn) armWatch(w *h1Response) {
	sc.watchMu.Lock()
	defer sc.watchMu.Unlock()
	if sc.watchCur != w || w.watchTimer != nil {
		return
	}
	w.watchTimer = time.AfterFunc(h1WatchAfter, func() { sc.watch(w) })
}

func (sc *h1ServerConn) watch(w *h1Response) {
	sc.watchMu.Lock()
	defer sc.watchMu.Unlock()
	if sc.watchCur != w {
		return
	}
	done := make(chan struct{})
	sc.watchDone = done
	go func() {
		defer close(done)
		if _, err := sc.br.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return // stopped by watchEnd
			}
			w.cancel()
		}
	}()
}

// watchEnd stops the watcher; true when it had started.
func (sc *h1ServerConn) watchEnd(w *h1Response) bool {
	sc.watchMu.Lock()
	sc.watchCur = nil
	done := sc.watchDone
	sc.watchDone = nil
	if w.watchTimer != nil {
		w.watchTimer.Stop()
	}
	sc.watchMu.Unlock()
	if done == nil {
		return false
	}
	_ = sc.conn.SetReadDeadline(time.Unix(1, 0))
	<-done
	_ = sc.conn.SetReadDeadline(time.Time{})
	return true
}

// h1Body is a request body: it sends "100 Continue" before the first
// read when the client asked for it, and starts the watcher at its end.
type h1Body struct {
	io.ReadCloser
	w      *h1Response
	expect bool
	asked  bool // for 100 Continue
	eof    bool
	mu     sync.Mutex
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.eof {
		return 0, io.EOF
	}
	if b.expect && !b.asked {
		b.asked = true
		if !b.w.sendContinue() {
			return 0, errors.New("cannot send 100 Continue")
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
		b.w.sc.armWatch(b.w)
	}
	return n, err
}

func (b *h1Body) Close() error { return nil }

// h1Response is the http.ResponseWriter of one request.
type h1Response struct {
	sc         *h1ServerConn
	req        *http.Request
	header     http.Header
	body       *h1Body // nil, or bodyStore
	bodyStore  h1Body
	mu         sync.Mutex // writes: the handler and a body reader sending 100 Continue
	status     int
	wroteHead  bool // WriteHeader called with a final status
	committed  bool // status line and headers are in the write buffer
	chunked    bool
	noBody     bool
	cl         int64 // declared Content-Length, -1 none
	written    int64
	closeAfter bool
	hijacked   bool
	failed     bool
	cancel     context.CancelFunc
	watchTimer *time.Timer
	// sentContinue: "100 Continue" went out (under mu).
	sentContinue bool
}

// Header is made on first use: a response forwarded by the router
// usually adopts the upstream's map instead (AdoptHeader).
func (w *h1Response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// AdoptHeader makes h the response's header map while no header has been
// set or written (router.HeaderAdopter).
func (w *h1Response) AdoptHeader(h http.Header) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHead || w.committed || w.hijacked || len(w.header) != 0 || h == nil {
		return false
	}
	w.header = h
	return true
}

func (w *h1Response) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHead || w.hijacked {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Interim responses go out at once.
		writeStatusLine(w.sc.bw, code)
		writeHeaders(w.sc.bw, w.header)
		w.sc.bw.WriteString("\r\n")
		if w.sc.bw.Flush() != nil {
			w.failed = true
		}
		return
	}
	w.wroteHead = true
	w.status = code
	w.cl = -1
	if v := w.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
			w.cl = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
}

func (w *h1Response) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHead {
		w.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		w.mu.Lock()
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	if w.failed {
		return 0, errDownstreamGone
	}
	if !w.committed {
		if w.cl < 0 && len(w.sc.pending)+len(p) <= h1PendingMax {
			// Held until the handler ends, to send a Content-Length.
			w.sc.pending = append(w.sc.pending, p...)
			w.written += int64(len(p))
			return len(p), nil
		}
		w.commit(false)
	}
	w.written += int64(len(p))
	if err := w.writeBody(p); err != nil {
		w.failed = true
		return 0, err
	}
	return len(p), nil
}

var errDownstreamGone = errors.New("downstream connection failed")

func (w *h1Response) writeBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	bw := w.sc.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		return err
	}
	_, err := bw.Write(p)
	return err
}

// commit puts the status line and headers in the write buffer; final
// says the handler is done (the length of a held body is then known).
// The caller holds w.mu.
func (w *h1Response) commit(final bool) {
	if w.committed {
		return
	}
	w.committed = true
	if !w.wroteHead {
		w.wroteHead, w.status, w.cl = true, http.StatusOK, -1
		if v := w.header.Get("Content-Length"); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				w.cl = n
			}
		}
	}
	h := w.Header()
	delete(h, "Transfer-Encoding")
	switch {
	case w.noBody:
	case w.cl >= 0:
	case final:
		w.cl = int64(len(w.sc.pending))
		h["Content-Length"] = []string{strconv.Itoa(len(w.sc.pending))}
	case w.req.ProtoMinor >= 1:
		w.chunked = true
	default:
		w.closeAfter = true // HTTP/1.0: the body ends with the connection
	}
	if b := w.body; b != nil && b.expect && !w.sentContinue {
		w.closeAfter = true // the client may or may not send the body
	}
	if w.closeAfter || w.sc.s.draining.Load() {
		h["Connection"] = []string{"close"}
		w.closeAfter = true
	} else if w.req.ProtoMinor == 0 {
		h["Connection"] = []string{"keep-alive"}
	} else {
		delete(h, "Connection")
	}
	bw := w.sc.bw
	writeStatusLine(bw, w.status)
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	writeHeaders(bw, h)
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
	if len(w.sc.pending) > 0 {
		if err := w.writeBody(w.sc.pending); err != nil {
			w.failed = true
		}
		w.sc.pending = w.sc.pending[:0]
	}
}

// finish completes the response after the handler returned; false when
// the connection cannot be reused.
func (w *h1Response) finish() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.commit(true)
	if w.chunked {
		bw := w.sc.bw
		bw.WriteString("0\r\n")
		for k, vv := range w.header {
			name, ok := strings.CutPrefix(k, http.TrailerPrefix)
			if !ok || !httpguts.ValidHeaderFieldName(name) {
				continue
			}
			for _, v := range vv {
				bw.WriteString(name)
				bw.WriteString(": ")
				bw.WriteString(sanitizeValue(v))
				bw.WriteString("\r\n")
			}
		}
		bw.WriteString("\r\n")
	}
	if err := w.sc.bw.Flush(); err != nil || w.failed {
		return false
	}
	if w.cl >= 0 && !w.noBody && w.written != w.cl {
		return false // short body: the client cannot find the next response
	}
	return true
}

func (w *h1Response) Flush() {
	_ = w.FlushError()
}

// FlushError sends what is buffered (http.ResponseController).
func (w *h1Response) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return http.ErrHijacked
	}
	w.commit(false)
	if err := w.sc.bw.Flush(); err != nil {
		w.failed = true
		return err
	}
	return nil
}

// EnableFullDuplex: the request body can always be read while the
// response is written.
func (w *h1Response) EnableFullDuplex() error { return nil }

func (w *h1Response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		return nil, nil, errors.New("response already started")
	}
	w.hijacked = true
	w.sc.hijacked = true
	w.sc.s.untrack(w.sc)
	_ = w.sc.conn.SetDeadline(time.Time{})
	return w.sc.conn, bufio.NewReadWriter(w.sc.br, w.sc.bw), nil
}

// sendContinue answers "Expect: 100-continue" before the body is read.
func (w *h1Response) sendContinue() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed || w.hijacked {
		return true // a final response is on its way: no 100 any more
	}
	w.sentContinue = true
	w.sc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return w.sc.bw.Flush() == nil
}

func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

// writeHeaders writes h except nil-valued keys (set to suppress a
// default) and trailers.
func writeHeaders(bw *bufio.Writer, h http.Header) {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(sanitizeValue(v))
			bw.WriteString("\r\n")
		}
	}
}

// sanitizeValue replaces line breaks, like net/http.
func sanitizeValue(v string) string {
	if strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, '\r') < 0 {
		return v
	}
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
}

func hasToken(vals []string, token string) bool {
	return len(vals) > 0 && httpguts.HeaderValuesContainsToken(vals, token)
}

// httpDate is the Date header value, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := cachedDate.Load(); d != nil && d.sec == now {
		return d.s
	}
	d := &dateCache{sec: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

type dateCache struct {
	sec int64
	s   string
}

var cachedDate atomic.Pointer[dateCache]

// track registers a connection; false when the server is closed.
func (s *hcmServer) track(sc *h1ServerConn) bool {
	s.h1mu.Lock()
	defer s.h1mu.Unlock()
	if s.h1closed || s.draining.Load() {
		return false
	}
	s.h1conns[sc] = struct{}{}
	return true
}

func (s *hcmServer) untrack(sc *h1ServerConn) {
	s.h1mu.Lock()
	delete(s.h1conns, sc)
	s.h1mu.Unlock()
}

// closeIdleH1 closes the connections waiting for a request; it reports
// how many connections remain.
func (s *hcmServer) closeIdleH1() int {
	s.h1mu.Lock()
	defer s.h1mu.Unlock()
	for sc := range s.h1conns {
		if sc.state.CompareAndSwap(h1Idle, h1Closed) {
			sc.conn.Close()
		}
	}
	return len(s.h1conns)
}

// shutdownH1 lets in-flight requests finish (their responses say
// Connection: close) and closes idle connections, until none is left or
// ctx ends.
func (s *hcmServer) shutdownH1(ctx context.Context) error {
	s.draining.Store(true)
	wait := time.Millisecond
	for s.closeIdleH1() > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	return nil
}

func (s *hcmServer) closeH1() {
	s.draining.Store(true)
	s.h1mu.Lock()
	defer s.h1mu.Unlock()
	s.h1closed = true
	for sc := range s.h1conns {
		sc.state.Store(h1Closed)
		sc.conn.Close()
	}
}
