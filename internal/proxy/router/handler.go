package router

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// DefaultMaxBufferBytes bounds the request body kept for retries and
// mirroring.
const DefaultMaxBufferBytes = 64 << 10

// Options configure NewHandler.
type Options struct {
	// Upstreams returns the current clusters; called once per request.
	Upstreams func() *upstream.Set
	Log       *slog.Logger
	// Now is the clock for measured durations (upstream service time);
	// time.Now when nil. Timeouts and delays use real timers.
	Now func() time.Time
	// Rand drives fault percentages, mirroring, weighted clusters and
	// retry jitter (seed it in tests). Accessed under a lock.
	Rand *mrand.Rand
	// MaxBufferBytes bounds request bodies buffered for retries and
	// mirrors (DefaultMaxBufferBytes when 0).
	MaxBufferBytes int
	// OriginalDst returns the original destination of a captured
	// connection, for ORIGINAL_DST clusters; by default the address
	// recorded with WithOriginalDst, else the local address of the
	// downstream connection.
	OriginalDst func(*http.Request) netip.AddrPort
}

type handler struct {
	routes func() *Table
	opts   Options
	randMu sync.Mutex
	log    *slog.Logger
}

// NewHandler serves requests with the table routes returns when each
// request starts; a request keeps that table (and the upstream set)
// until it ends, so tables may be swapped at any time.
func NewHandler(routes func() *Table, opts Options) http.Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	}
	if opts.MaxBufferBytes <= 0 {
		opts.MaxBufferBytes = DefaultMaxBufferBytes
	}
	if opts.OriginalDst == nil {
		opts.OriginalDst = localAddr
	}
	if opts.Upstreams == nil {
		opts.Upstreams = func() *upstream.Set { return nil }
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{routes: routes, opts: opts, log: log}
}

type origDstKey struct{}

// WithOriginalDst records the original destination of the downstream
// connection (traffic captured by REDIRECT), which ORIGINAL_DST clusters
// such as PassthroughCluster connect to. Without it the router uses the
// local address of the downstream connection.
func WithOriginalDst(ctx context.Context, dst netip.AddrPort) context.Context {
	return context.WithValue(ctx, origDstKey{}, dst)
}

func localAddr(r *http.Request) netip.AddrPort {
	if dst, ok := r.Context().Value(origDstKey{}).(netip.AddrPort); ok && dst.IsValid() {
		return dst
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPort{}
}

// chance reports true with probability num/den.
func (h *handler) chance(num, den uint64) bool {
	if num >= den {
		return true
	}
	if num == 0 {
		return false
	}
	h.randMu.Lock()
	defer h.randMu.Unlock()
	return h.opts.Rand.Uint64N(den) < num
}

func (h *handler) randN(n uint64) uint64 {
	h.randMu.Lock()
	defer h.randMu.Unlock()
	return h.opts.Rand.Uint64N(n)
}

// exchange is the state of one request through the router.
type exchange struct {
	h     *handler
	w     http.ResponseWriter
	r     *http.Request
	info  *RequestInfo
	table *Table
	vh    *virtualHost
	rt    *route
	cors  *corsPolicy // active CORS policy for an allowed origin
	// extra response headers (CORS, hash cookie); nil until one is set
	extra http.Header
	// timedOut and streamEnded: the route timeout or max_stream_duration
	// ended the exchange.
	timedOut, streamEnded atomic.Bool
	fc                    fmtContext
}

// extraHeader is x.extra, made on first use.
func (x *exchange) extraHeader() http.Header {
	if x.extra == nil {
		x.extra = http.Header{}
	}
	return x.extra
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := InfoFrom(r.Context())
	if info == nil {
		var ctx context.Context
		ctx, info = WithRequestInfo(r.Context())
		r = r.WithContext(ctx)
	}
	x := &exchange{h: h, w: w, r: r, info: info}
	x.fc = fmtContext{r: r}
	x.serve()
}

func (x *exchange) serve() {
	x.table = x.h.routes()
	if x.table == nil {
		x.info.addFlag(FlagNoRoute)
		x.localReply(http.StatusNotFound, "", nil)
		return
	}
	var v *requestView
	x.vh, x.rt, v = x.table.route(x.r)
	if x.vh != nil {
		x.info.VirtualHost = x.vh.name
	}
	if x.rt == nil {
		x.info.addFlag(FlagNoRoute)
		x.localReply(http.StatusNotFound, "", nil)
		return
	}
	x.info.RouteName = x.rt.name
	x.info.Operation = x.rt.operation

	fault, cors := x.rt.filters.fault, x.rt.filters.cors
	if fault == nil {
		fault = x.vh.filters.fault
	}
	if cors == nil {
		cors = x.vh.filters.cors
	}
	// The HTTP filter order of docs/xds.md: fault, then CORS.
	if fault != nil && x.handleFault(fault, v) {
		return
	}
	if cors != nil && x.handleCORS(cors) {
		return
	}
	switch x.rt.kind {
	case actionRedirect:
		x.redirect(x.rt.redirect, v)
	case actionDirect:
		hdr := x.w.Header()
		x.applyResponseMutations(hdr, nil)
		if x.rt.direct.body != "" {
			hdr.Set("Content-Type", "text/plain")
		}
		hdr.Set("Content-Length", strconv.Itoa(len(x.rt.direct.body)))
		x.writeHeader(x.rt.direct.status)
		if x.r.Method != http.MethodHead {
			_, _ = x.w.Write([]byte(x.rt.direct.body))
		}
	default:
		x.forward(v)
	}
}

// route finds the virtual host and the first matching route of r.
func (t *Table) route(r *http.Request) (*virtualHost, *route, *requestView) {
	v := &requestView{r: r, path: r.URL.EscapedPath(), scheme: scheme(r)}
	vh := t.virtualHostFor(r.Host)
	if vh == nil {
		return nil, nil, v
	}
	for _, rt := range vh.routes {
		if rt.match.match(v) {
			return vh, rt, v
		}
	}
	return vh, nil, v
}

// Match returns the names of the virtual host and route that serve r
// ("" when none), for diagnostics and tests.
func (t *Table) Match(r *http.Request) (virtualHost, route string) {
	vh, rt, _ := t.route(r)
	if vh != nil {
		virtualHost = vh.name
	}
	if rt != nil {
		route = rt.name
	}
	return virtualHost, route
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func (x *exchange) writeHeader(code int) {
	for k, vv := range x.extra {
		x.w.Header()[k] = append(x.w.Header()[k], vv...)
	}
	x.info.ResponseCode = code
	x.w.WriteHeader(code)
}

// localReply answers without the upstream. gRPC requests get a
// trailers-only gRPC error carrying the status Envoy maps code to.
func (x *exchange) localReply(code int, body string, hdr http.Header) {
	out := x.w.Header()
	for k, vv := range hdr {
		out[k] = vv
	}
	if isGRPC(x.r) {
		out.Set("Content-Type", "application/grpc")
		out.Set("Grpc-Status", strconv.Itoa(grpcStatusFor(code)))
		if body != "" {
			out.Set("Grpc-Message", body)
		}
		out.Set("Content-Length", "0")
		x.writeHeader(http.StatusOK)
		x.info.ResponseCode = code
		return
	}
	if body != "" {
		out.Set("Content-Type", "text/plain")
	}
	out.Set("Content-Length", strconv.Itoa(len(body)))
	x.writeHeader(code)
	if x.r.Method != http.MethodHead && body != "" {
		_, _ = x.w.Write([]byte(body))
	}
}

// grpcStatusFor maps an HTTP status to a gRPC status like Envoy.
func grpcStatusFor(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// applyResponseMutations applies response header changes from the most
// specific level to the least (weighted cluster, route, virtual host,
// route configuration), so that a less specific level wins on overwrite,
// like Envoy by default.
func (x *exchange) applyResponseMutations(hdr http.Header, wc *weightedCluster) {
	if wc != nil {
		wc.resHeaders.apply(hdr, nil, &x.fc)
	}
	x.rt.resHeaders.apply(hdr, nil, &x.fc)
	x.vh.resHeaders.apply(hdr, nil, &x.fc)
	x.table.resHeaders.apply(hdr, nil, &x.fc)
}

func (x *exchange) applyRequestMutations(hdr http.Header, host *string, wc *weightedCluster) {
	if wc != nil {
		wc.reqHeaders.apply(hdr, host, &x.fc)
	}
	x.rt.reqHeaders.apply(hdr, host, &x.fc)
	x.vh.reqHeaders.apply(hdr, host, &x.fc)
	x.table.reqHeaders.apply(hdr, host, &x.fc)
}

// handleCORS answers preflights and prepares the response headers of
// allowed cross-origin requests. It reports whether it answered.
func (x *exchange) handleCORS(c *corsPolicy) bool {
	origin := httphead.Get(x.r.Header, "Origin")
	if origin == "" || !x.h.chance(c.enabledNum, c.enabledDen) {
		return false
	}
	allowed := c.allowed(origin)
	preflight := x.r.Method == http.MethodOptions && httphead.Get(x.r.Header, "Access-Control-Request-Method") != ""
	if preflight {
		if !allowed {
			if c.forwardNoMat {
				return false
			}
			x.localReply(http.StatusOK, "", nil)
			return true
		}
		hdr := x.w.Header()
		hdr.Set("Access-Control-Allow-Origin", origin)
		if c.credentials {
			hdr.Set("Access-Control-Allow-Credentials", "true")
		}
		if c.methods != "" {
			hdr.Set("Access-Control-Allow-Methods", c.methods)
		}
		if c.headers != "" {
			hdr.Set("Access-Control-Allow-Headers", c.headers)
		}
		if c.maxAge != "" {
			hdr.Set("Access-Control-Max-Age", c.maxAge)
		}
		if c.privateNet && httphead.Get(x.r.Header, "Access-Control-Request-Private-Network") == "true" {
			hdr.Set("Access-Control-Allow-Private-Network", "true")
		}
		x.localReply(http.StatusOK, "", nil)
		return true
	}
	if allowed {
		extra := x.extraHeader()
		extra.Set("Access-Control-Allow-Origin", origin)
		if c.credentials {
			extra.Set("Access-Control-Allow-Credentials", "true")
		}
		if c.expose != "" {
			extra.Set("Access-Control-Expose-Headers", c.expose)
		}
	}
	return false
}

// handleFault injects a delay and/or an abort. It reports whether it
// answered the request.
func (x *exchange) handleFault(f *faultPolicy, v *requestView) bool {
	for i := range f.headers {
		if !f.headers[i].match(v) {
			return false
		}
	}
	if f.maxActive != 0 {
		if f.maxActive < 0 || f.active.Add(1) > f.maxActive {
			if f.maxActive > 0 {
				f.active.Add(-1)
			}
			return false
		}
		defer f.active.Add(-1)
	}
	if f.hasDelay && x.h.chance(f.delayNum, f.delayDen) {
		x.info.addFlag(FlagDelayInjected)
		t := time.NewTimer(f.delay)
		select {
		case <-t.C:
		case <-x.r.Context().Done():
			t.Stop()
			x.info.addFlag(FlagDownstreamCancel)
			return true
		}
	}
	if f.hasAbort && x.h.chance(f.abortNum, f.abortDen) {
		x.info.addFlag(FlagFaultInjected)
		if f.abortGRPC >= 0 {
			hdr := x.w.Header()
			hdr.Set("Content-Type", "application/grpc")
			hdr.Set("Grpc-Status", strconv.Itoa(f.abortGRPC))
			hdr.Set("Grpc-Message", "fault filter abort")
			hdr.Set("Content-Length", "0")
			x.writeHeader(http.StatusOK)
			return true
		}
		x.localReply(f.abortHTTP, "fault filter abort", nil)
		return true
	}
	return false
}

func (x *exchange) redirect(ra *redirectAction, v *requestView) {
	sch := scheme(x.r)
	if ra.scheme != "" {
		sch = ra.scheme
	}
	host, port := x.r.Host, ""
	if h, p, err := net.SplitHostPort(x.r.Host); err == nil {
		host, port = h, p
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	if ra.host != "" {
		host = ra.host
		if h, p, err := net.SplitHostPort(ra.host); err == nil {
			host, port = h, p
		}
	}
	if ra.port != 0 {
		port = strconv.Itoa(int(ra.port))
	}
	// Default ports for the scheme are dropped, like Envoy.
	if (sch == "http" && port == "80") || (sch == "https" && port == "443") {
		port = ""
	}
	if ra.scheme != "" && ra.port == 0 && ra.scheme != scheme(x.r) {
		port = "" // a scheme change drops the original port
	}
	path := v.path
	switch {
	case ra.path != "":
		path = ra.path
	case ra.prefixRewrite != nil:
		path = *ra.prefixRewrite + path[x.rt.match.matchedLen(path):]
	case ra.regexRewrite != nil:
		path = ra.regexRewrite.apply(path)
	}
	query := x.r.URL.RawQuery
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i+1:]
	}
	if ra.stripQuery {
		query = ""
	}
	loc := sch + "://" + host
	if port != "" {
		loc += ":" + port
	}
	loc += path
	if query != "" {
		loc += "?" + query
	}
	hdr := x.w.Header()
	x.applyResponseMutations(hdr, nil)
	hdr.Set("Location", loc)
	hdr.Set("Content-Length", "0")
	x.writeHeader(ra.code)
}

// NewRequestID is a random UUID (version 4) for x-request-id. Like
// Envoy's, it comes from a fast generator (the runtime's ChaCha8, seeded
// by the system), not from the system's random source per request: it
// names a request, it protects nothing.
func NewRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], mrand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], mrand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
