package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// Local reply bodies, as Envoy words them.
const (
	bodyNoHealthy = "no healthy upstream"
	bodyOverflow  = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyConnect   = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset     = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyTimeout   = "upstream request timeout"
	bodyMaxStream = "upstream max stream duration reached"
)

// hopHeaders are connection-specific and never forwarded.
// hopHeaders are canonical, so they are deleted without canonicalizing.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Trailer", "Http2-Settings"}

func stripHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name)
	}
	// TE: only "trailers" may cross (gRPC needs it).
	if te := h["Te"]; len(te) > 0 {
		keep := false
		for _, v := range te {
			for _, p := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(p), "trailers") {
					keep = true
				}
			}
		}
		delete(h, "Te")
		if keep {
			h.Set("Te", "trailers")
		}
	}
}

// upgradeType is the lower-case Upgrade of an HTTP/1.1 upgrade request.
func upgradeType(r *http.Request) string {
	if r.ProtoMajor != 1 {
		return ""
	}
	for _, c := range r.Header.Values("Connection") {
		for _, p := range strings.Split(c, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "upgrade") {
				return strings.ToLower(httphead.Get(r.Header, "Upgrade"))
			}
		}
	}
	return ""
}

// forward proxies the request to the route's cluster with retries,
// timeouts and mirroring.
func (x *exchange) forward(v *requestView) {
	ra := x.rt.action
	var wc *weightedCluster
	clusterName := ra.cluster
	switch {
	case ra.clusterHeader != "":
		clusterName = x.r.Header.Get(ra.clusterHeader)
	case len(ra.weighted) > 0:
		wc = x.pickWeighted(ra)
		clusterName = wc.name
	}
	x.info.ClusterName = clusterName
	set := x.h.opts.Upstreams()
	c := set.Get(clusterName)
	if c == nil {
		x.info.addFlag(FlagNoClusterFound)
		x.localReply(ra.notFoundCode, "", nil)
		return
	}
	x.info.Cluster = c.Info()

	// Upgrades: websocket is allowed (the connection manager's
	// upgrade_configs), others only when the route enables them; an
	// h2c upgrade is just dropped, like Envoy does.
	up := upgradeType(x.r)
	if up == "h2c" {
		up = ""
	}
	if up != "" {
		enabled, ok := ra.upgrades[up]
		if (ok && !enabled) || (!ok && up != "websocket") {
			x.localReply(http.StatusForbidden, "", nil)
			return
		}
	}

	// The request as the upstream sees it.
	hdr, spare := cloneHeader(x.r.Header, 6)
	stripHopByHop(hdr)
	if up != "" {
		spare.Set(hdr, "Connection", "Upgrade")
		spare.Set(hdr, "Upgrade", httphead.Get(x.r.Header, "Upgrade"))
	}
	host := x.r.Host
	if ra.hostHeader != "" {
		if hv := x.r.Header.Get(ra.hostHeader); hv != "" {
			host = hv
		}
	}
	if ra.hostLiteral != "" {
		host = ra.hostLiteral
	}
	if wc != nil && wc.hostLiteral != "" {
		host = wc.hostLiteral
	}
	path := v.path
	switch {
	case ra.prefixRewrite != "":
		path = ra.prefixRewrite + path[x.rt.match.matchedLen(path):]
	case ra.regexRewrite != nil:
		path = ra.regexRewrite.apply(path)
	}
	if path != v.path {
		spare.Set(hdr, "X-Envoy-Original-Path", x.r.URL.RequestURI())
	}
	if hdr.Get("X-Request-Id") == "" {
		spare.Set(hdr, "X-Request-Id", NewRequestID())
	}
	x.info.RequestID = hdr.Get("X-Request-Id")
	if hdr.Get("X-Forwarded-Proto") == "" {
		spare.Set(hdr, "X-Forwarded-Proto", scheme(x.r))
	}
	x.applyRequestMutations(hdr, &host, wc)
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = nil // do not let net/http add its own
	}
	u := &url.URL{Path: path, RawQuery: x.r.URL.RawQuery}
	if p, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = p, path
	}

	opts := upstream.RequestOptions{OriginalDst: x.h.opts.OriginalDst(x.r)}
	if key, ok := x.hashKey(ra, v); ok {
		opts.HashKey, opts.HasHash = key, true
	}

	// Timeouts: the route timeout (or grpc-timeout within
	// grpc_timeout_header_max) bounds the whole exchange.
	timeout := ra.timeout
	if ra.grpcHeaderMax != nil {
		if d, ok := parseGRPCTimeout(httphead.Get(x.r.Header, "Grpc-Timeout")); ok {
			timeout = d
			if *ra.grpcHeaderMax > 0 && d > *ra.grpcHeaderMax {
				timeout = *ra.grpcHeaderMax
			}
		}
	}
	ctx, cancel := context.WithCancel(x.r.Context())
	defer cancel()
	var routeTimer *time.Timer
	if timeout > 0 {
		routeTimer = time.AfterFunc(timeout, func() { x.timedOut.Store(true); cancel() })
		defer routeTimer.Stop()
	}
	if ra.maxStream > 0 {
		t := time.AfterFunc(ra.maxStream, func() { x.streamEnded.Store(true); cancel() })
		defer t.Stop()
	}

	// Body: kept for replay when retries or mirrors may need it.
	hasBody := x.r.Body != nil && x.r.Body != http.NoBody && x.r.ContentLength != 0
	rp := ra.retry
	var body *replayBody
	if hasBody {
		limit := 0
		if rp != nil && rp.numRetries > 0 {
			limit = x.bufferLimit()
		}
		body = &replayBody{src: x.r.Body, limit: limit}
	}
	if x.r.ProtoMajor == 1 && hasBody {
		_ = http.NewResponseController(x.w).EnableFullDuplex()
	}
	x.mirror(ctx, set, ra, hdr, host, u, body)

	var (
		prev     []*upstream.Host
		resp     *http.Response
		releases []func()
	)
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	maxAttempts := 1
	if rp != nil {
		maxAttempts += rp.numRetries
	}
	var attemptCancel context.CancelFunc = func() {}
	defer func() { attemptCancel() }()
	var perTryFired *atomic.Bool
	var attemptStart time.Time
	for attempt := 1; ; attempt++ {
		x.info.Attempts = attempt
		// An attempt has a context of its own only for a per-try
		// timeout: an attempt given up for a retry has already failed or
		// had its response body closed, which ends it.
		actx := ctx
		attemptCancel = func() {}
		perTryFired = &neverFired
		if rp != nil && rp.perTry > 0 && up == "" {
			fired := new(atomic.Bool)
			perTryFired = fired
			var acancel context.CancelFunc
			actx, acancel = context.WithCancel(ctx)
			t := time.AfterFunc(rp.perTry, func() { fired.Store(true); acancel() })
			attemptCancel = func() { t.Stop(); acancel() }
		}
		// The first attempt sends hdr itself; a retry sends a copy, since
		// an abandoned attempt may still be reading its headers. Attempts
		// only Set the headers they change, so the copy is as good as the
		// original.
		ahdr, aspare := hdr, &spare
		if attempt > 1 {
			var s httphead.Slab
			ahdr, s = cloneHeader(hdr, 3)
			aspare = &s
		}
		out := &http.Request{
			Method:        x.r.Method,
			URL:           u,
			Proto:         x.r.Proto,
			ProtoMajor:    x.r.ProtoMajor,
			ProtoMinor:    x.r.ProtoMinor,
			Header:        ahdr,
			Host:          host,
			ContentLength: x.r.ContentLength,
			RemoteAddr:    x.r.RemoteAddr,
		}
		if body != nil {
			out.Body = body.attempt()
		}
		aspare.Set(ahdr, "X-Envoy-Attempt-Count", strconv.Itoa(attempt))
		if expected := expectedTimeout(timeout, rp); expected > 0 && up == "" {
			aspare.Set(ahdr, "X-Envoy-Expected-Rq-Timeout-Ms", strconv.FormatInt(expected.Milliseconds(), 10))
		}
		if up != "" {
			aspare.Set(ahdr, "Connection", "Upgrade")
		}
		out = out.WithContext(actx)
		opts.Attempt, opts.PreviousHosts = attempt, prev
		attemptStart = x.h.opts.Now()
		r, h, err := c.RoundTrip(out, opts)
		if h != nil {
			x.info.Host = h
			x.fc.upstreamAddr = h.Address()
			if attempt < maxAttempts {
				prev = append(prev, h) // for the retries' host predicate
			}
		}
		canRetry := func() bool {
			if rp == nil || attempt >= maxAttempts || (body != nil && !body.replayable()) || up != "" || !rp.requestAllowed(v) {
				return false
			}
			release, ok := c.AcquireRetry()
			if !ok {
				return false // max_retries circuit breaker is open
			}
			releases = append(releases, release)
			return true
		}
		if err != nil {
			x.info.UpstreamFailure = err.Error()
			var ce *upstream.ConnectError
			var kind failureKind
			switch {
			case errors.Is(err, upstream.ErrNoHealthyUpstream):
				x.info.addFlag(FlagNoHealthyUpstream)
				x.localReply(http.StatusServiceUnavailable, bodyNoHealthy, nil)
				return
			case errors.Is(err, upstream.ErrOverflow):
				x.info.addFlag(FlagUpstreamOverflow)
				x.localReply(http.StatusServiceUnavailable, bodyOverflow, http.Header{"X-Envoy-Overloaded": {"true"}})
				return
			case x.timedOut.Load():
				x.info.addFlag(FlagUpstreamTimeout)
				x.localReply(http.StatusGatewayTimeout, bodyTimeout, nil)
				return
			case x.streamEnded.Load():
				x.info.addFlag(FlagStreamDuration)
				x.localReply(http.StatusRequestTimeout, bodyMaxStream, nil)
				return
			case x.r.Context().Err() != nil:
				x.info.addFlag(FlagDownstreamCancel)
				return
			case perTryFired.Load():
				kind = failPerTryTimeout
			case errors.As(err, &ce):
				kind = failConnect
			default:
				var re *upstream.ResetError
				if errors.As(err, &re) && re.RefusedStream {
					kind = failRefused
				} else {
					kind = failReset
				}
			}
			if rp != nil && rp.retryFailure(kind) && canRetry() {
				attemptCancel()
				x.backoff(ctx, rp, attempt)
				continue
			}
			if rp != nil && rp.retryFailure(kind) && attempt > 1 {
				x.info.addFlag(FlagRetryLimitExceeded)
			}
			switch kind {
			case failPerTryTimeout:
				x.info.addFlag(FlagUpstreamTimeout)
				x.localReply(http.StatusGatewayTimeout, bodyTimeout, nil)
			case failConnect:
				x.info.addFlag(FlagUpstreamConnect)
				x.localReply(http.StatusServiceUnavailable, bodyConnect, nil)
			default:
				x.info.addFlag(FlagUpstreamReset)
				x.localReply(http.StatusServiceUnavailable, bodyReset, nil)
			}
			return
		}
		if rp != nil && rp.retryResponse(r) {
			if canRetry() {
				r.Body.Close()
				attemptCancel()
				x.backoff(ctx, rp, attempt)
				continue
			}
			if attempt > 1 {
				x.info.addFlag(FlagRetryLimitExceeded)
			}
		}
		resp = r
		break
	}
	defer resp.Body.Close()

	if resp.StatusCode == http.StatusSwitchingProtocols && up != "" {
		// The route timeout covers the upgrade handshake, not the
		// upgraded stream.
		if routeTimer != nil && !routeTimer.Stop() {
			x.info.addFlag(FlagUpstreamTimeout)
			x.localReply(http.StatusGatewayTimeout, bodyTimeout, nil)
			return
		}
		x.upgrade(resp, wc)
		return
	}
	var out http.Header
	if a, ok := x.w.(HeaderAdopter); ok && a.AdoptHeader(resp.Header) {
		out = resp.Header // the upstream's map becomes the response's
	} else {
		out = x.w.Header()
		for k, vv := range resp.Header {
			out[k] = vv
		}
	}
	stripHopByHop(out)
	if _, ok := resp.Header["Date"]; !ok {
		out["Date"] = nil
	}
	if x.vh.attemptCountInResponse {
		out.Set("X-Envoy-Attempt-Count", strconv.Itoa(x.info.Attempts))
	}
	out.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(x.h.opts.Now().Sub(attemptStart).Milliseconds(), 10))
	x.applyResponseMutations(out, wc)
	x.writeHeader(resp.StatusCode)
	if resp.ContentLength == -1 {
		// Streams (gRPC, server-sent events) get their headers now.
		_ = http.NewResponseController(x.w).Flush()
	}
	if err := x.copyBody(resp); err != nil {
		switch {
		case x.timedOut.Load(), perTryFired.Load():
			x.info.addFlag(FlagUpstreamTimeout)
		case x.streamEnded.Load():
			x.info.addFlag(FlagStreamDuration)
		case x.r.Context().Err() != nil:
			x.info.addFlag(FlagDownstreamCancel)
		default:
			x.info.addFlag(FlagUpstreamReset)
		}
		x.info.UpstreamFailure = err.Error()
		if x.streamEnded.Load() && isGRPC(x.r) {
			// gRPC streams end with a status rather than a reset.
			x.w.Header().Set(http.TrailerPrefix+"Grpc-Status", "4")
			return
		}
		panic(http.ErrAbortHandler) // reset the downstream stream
	}
	for k, vv := range resp.Trailer {
		x.w.Header()[http.TrailerPrefix+k] = vv
	}
}

// HeaderAdopter is a ResponseWriter that can take a header map as its
// own (the upstream response's), instead of a copy into Header(); false
// when it cannot (headers already written or set).
type HeaderAdopter interface {
	AdoptHeader(h http.Header) bool
}

// neverFired is the per-try timeout flag of attempts without one.
var neverFired atomic.Bool

// cloneHeader copies h like http.Header.Clone, with room for extra more
// keys: the headers the router adds do not grow the map again, and their
// values come from the spare slab returned, allocated with the copy.
func cloneHeader(h http.Header, extra int) (http.Header, httphead.Slab) {
	n := 0
	for _, vv := range h {
		n += len(vv)
	}
	sv := make([]string, n+extra)
	out := make(http.Header, len(h)+extra)
	for k, vv := range h {
		if vv == nil {
			out[k] = nil
			continue
		}
		n = copy(sv, vv)
		out[k] = sv[:n:n]
		sv = sv[n:]
	}
	return out, sv
}

// expectedTimeout is the time the upstream has to answer one attempt:
// the per-try timeout when shorter than the route's.
func expectedTimeout(route time.Duration, rp *retryPolicy) time.Duration {
	if rp != nil && rp.perTry > 0 && (route == 0 || rp.perTry < route) {
		return rp.perTry
	}
	return route
}

// bufferLimit is the request body buffer limit of the route, else of the
// virtual host, else the handler's.
func (x *exchange) bufferLimit() int {
	switch {
	case x.rt.bufferLimit > 0:
		return x.rt.bufferLimit
	case x.vh.bufferLimit > 0:
		return x.vh.bufferLimit
	}
	return x.h.opts.MaxBufferBytes
}

var errDownstreamWrite = errors.New("downstream write failed")

// copyBody streams the response body, flushing as data arrives when the
// length is unknown (streaming, gRPC, server-sent events).
func (x *exchange) copyBody(resp *http.Response) error {
	flush := resp.ContentLength == -1
	rc := http.NewResponseController(x.w)
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		n, err := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := x.w.Write((*buf)[:n]); werr != nil {
				return errDownstreamWrite
			}
			if flush {
				_ = rc.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (x *exchange) backoff(ctx context.Context, rp *retryPolicy, attempt int) {
	ceil := rp.baseBackoff << min(attempt-1, 20)
	if ceil > rp.maxBackoff || ceil <= 0 {
		ceil = rp.maxBackoff
	}
	if ceil <= 0 {
		return
	}
	d := time.Duration(x.h.randN(uint64(ceil)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (x *exchange) pickWeighted(ra *routeAction) *weightedCluster {
	n := x.h.randN(ra.totalWeight)
	for i := range ra.weighted {
		if n < ra.weighted[i].weight {
			return &ra.weighted[i]
		}
		n -= ra.weighted[i].weight
	}
	return &ra.weighted[len(ra.weighted)-1]
}

// hashKey evaluates the route's hash policies; several results are
// combined like Envoy (rotate and xor), a terminal policy that yields a
// value stops the evaluation.
func (x *exchange) hashKey(ra *routeAction, v *requestView) (uint64, bool) {
	var key uint64
	have := false
	for _, p := range ra.hash {
		var val string
		ok := false
		switch p.kind {
		case hashHeader:
			if p.name == ":authority" || strings.EqualFold(p.name, "host") {
				val, ok = x.r.Host, true
			} else {
				val, ok = v.header(canonicalOrPseudo(p.name))
			}
			if ok && p.rewrite != nil {
				val = p.rewrite.apply(val)
			}
		case hashCookie:
			if ck, err := x.r.Cookie(p.name); err == nil {
				val, ok = ck.Value, true
			} else if p.ttl != nil {
				val, ok = NewRequestID()[:16], true
				ck := &http.Cookie{Name: p.name, Value: val, Path: p.path, HttpOnly: true}
				if *p.ttl > 0 {
					ck.MaxAge = int(p.ttl.Seconds())
				}
				x.extraHeader().Add("Set-Cookie", ck.String())
			}
		case hashSourceIP:
			if ip := hostOnly(x.r.RemoteAddr); ip != "" {
				val, ok = ip, true
			}
		case hashQuery:
			if vals := v.queryValues()[p.name]; len(vals) > 0 {
				val, ok = vals[0], true
			}
		}
		if !ok {
			continue
		}
		hv := upstream.HashString(val)
		if have {
			key = (key<<1 | key>>63) ^ hv
		} else {
			key = hv
		}
		have = true
		if p.terminal {
			break
		}
	}
	return key, have
}

func canonicalOrPseudo(name string) string {
	if strings.HasPrefix(name, ":") {
		return name
	}
	return http.CanonicalHeaderKey(name)
}

// parseGRPCTimeout parses a grpc-timeout header ("100m", "5S").
func parseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[s[len(s)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// mirror sends fire-and-forget copies to the mirror clusters, with the
// authority suffixed "-shadow". A body larger than the buffer limit is
// not mirrored.
func (x *exchange) mirror(ctx context.Context, set *upstream.Set, ra *routeAction, hdr http.Header, host string, u *url.URL, body *replayBody) {
	if len(ra.mirrors) == 0 {
		return
	}
	for _, m := range ra.mirrors {
		if !x.h.chance(m.numerator, m.denominator) {
			continue
		}
		c := set.Get(m.cluster)
		if c == nil {
			continue
		}
		var payload []byte
		if body != nil {
			b, ok := body.bufferAll(x.bufferLimit())
			if !ok {
				x.h.log.Debug("request body too large to mirror", "cluster", m.cluster)
				continue
			}
			payload = b
		}
		shadowHost := host
		if !m.noSuffix {
			shadowHost = shadowAuthority(host)
		}
		req := &http.Request{
			Method:        x.r.Method,
			URL:           u,
			Proto:         x.r.Proto,
			ProtoMajor:    x.r.ProtoMajor,
			ProtoMinor:    x.r.ProtoMinor,
			Header:        hdr.Clone(),
			Host:          shadowHost,
			ContentLength: int64(len(payload)),
		}
		if payload != nil {
			req.Body = io.NopCloser(strings.NewReader(string(payload)))
		}
		x.info.MirroredTo = joinNonEmpty(x.info.MirroredTo, m.cluster)
		mctx := context.WithoutCancel(ctx)
		go func() {
			mctx, cancel := context.WithTimeout(mctx, DefaultTimeout)
			defer cancel()
			resp, _, err := c.RoundTrip(req.WithContext(mctx), upstream.RequestOptions{Attempt: 1})
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
}

func joinNonEmpty(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// shadowAuthority inserts "-shadow" before the port: "foo:80" →
// "foo-shadow:80".
func shadowAuthority(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		return host[:i] + "-shadow" + host[i:]
	}
	return host + "-shadow"
}

// upgrade completes an HTTP/1.1 upgrade (websocket): the 101 response is
// written on the hijacked downstream connection and bytes are copied both
// ways until either side closes.
func (x *exchange) upgrade(resp *http.Response, wc *weightedCluster) {
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		x.info.addFlag(FlagUpstreamReset)
		x.localReply(http.StatusBadGateway, "upstream upgrade response has no body stream", nil)
		return
	}
	conn, brw, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		x.localReply(http.StatusInternalServerError, "upgrade not possible on this connection", nil)
		return
	}
	defer conn.Close()
	hdr := resp.Header.Clone()
	x.applyResponseMutations(hdr, wc)
	x.info.ResponseCode = resp.StatusCode
	bw := bufio.NewWriter(conn)
	_, _ = bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = hdr.Write(bw)
	_, _ = bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(up, brw.Reader)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(conn, up)
		done <- struct{}{}
	}()
	<-done
}

// replayBody lets a request body be sent again on retry: the bytes read
// by the attempts are kept up to limit; past it, the body can no longer be
// replayed. Only the latest attempt may read, and reads of the source are
// serialized, so a transport still writing an abandoned attempt never
// races the next one.
type replayBody struct {
	src   io.ReadCloser
	srcMu sync.Mutex // held while reading src

	mu       sync.Mutex
	limit    int
	buf      []byte
	consumed int  // bytes read from src
	overflow bool // buf no longer holds everything consumed
	noReplay bool // buf holds a prefix for the first attempt only
	done     bool
	err      error
	active   *replayReader
}

type replayReader struct {
	b   *replayBody
	pos int
}

var errSuperseded = errors.New("request body superseded by a retry")

func (b *replayBody) attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := &replayReader{b: b}
	b.active = r
	return r
}

func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow && !b.noReplay
}

// fromBuffer serves what is buffered; ok is false when the source must be
// read. The caller holds b.mu.
func (r *replayReader) fromBuffer(p []byte) (n int, err error, ok bool) {
	b := r.b
	switch {
	case b.active != r:
		return 0, errSuperseded, true
	case r.pos < len(b.buf):
		n := copy(p, b.buf[r.pos:])
		r.pos += n
		return n, nil, true
	case r.pos < b.consumed:
		return 0, errors.New("request body exceeded the buffer and cannot be replayed"), true
	case b.done:
		return 0, b.err, true
	}
	return 0, nil, false
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	if n, err, ok := r.fromBuffer(p); ok {
		b.mu.Unlock()
		return n, err
	}
	b.mu.Unlock()

	b.srcMu.Lock()
	defer b.srcMu.Unlock()
	b.mu.Lock()
	// Another reader may have read the source while this one waited.
	if n, err, ok := r.fromBuffer(p); ok {
		b.mu.Unlock()
		return n, err
	}
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record(p[:n], err)
	r.pos += n
	return n, err
}

// record notes bytes read from the source. The caller holds b.mu.
func (b *replayBody) record(data []byte, err error) {
	if len(data) > 0 {
		if !b.overflow && !b.noReplay && len(b.buf)+len(data) <= b.limit {
			b.buf = append(b.buf, data...)
		} else if !b.noReplay {
			b.overflow, b.buf = true, nil
		}
		b.consumed += len(data)
	}
	if err != nil {
		b.done, b.err = true, err
	}
}

func (r *replayReader) Close() error { return nil }

// bufferAll reads the whole body into the buffer (for mirroring) when it
// fits in limit bytes; the attempts then replay it. A larger body is kept
// for the first attempt only.
func (b *replayBody) bufferAll(limit int) ([]byte, bool) {
	b.srcMu.Lock()
	defer b.srcMu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow || b.noReplay {
		return nil, false
	}
	if b.done {
		return b.buf, true // already read by an earlier mirror
	}
	b.limit = max(b.limit, limit)
	chunk := make([]byte, 32<<10)
	for !b.done {
		n, err := b.src.Read(chunk)
		if len(b.buf)+n > b.limit {
			// Too large to mirror: keep it for the first attempt.
			b.noReplay = true
			b.buf = append(b.buf, chunk[:n]...)
			b.consumed += n
			if err != nil {
				b.done, b.err = true, err
			}
			return nil, false
		}
		b.record(chunk[:n], err)
	}
	return b.buf, true
}
