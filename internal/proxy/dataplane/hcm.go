package dataplane

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
	"github.com/mizzen-mesh/mizzen/internal/proxy/router"
)

// HTTP filter names of docs/xds.md, in their required order.
const (
	jwtFilterName = "envoy.filters.http.jwt_authn"
	rbacFilter    = "envoy.filters.http.rbac"
	faultFilter   = "envoy.filters.http.fault"
	corsFilter    = "envoy.filters.http.cors"
	routerFilter  = "envoy.filters.http.router"
)

// hcm is one HTTP connection manager: an http.Server fed with the
// connections its filter chain accepted, and the filters in front of the
// engine's router.
type hcm struct {
	d             *Dataplane
	key           string
	cfg           *hcmv3.HttpConnectionManager
	tlsTerminated bool

	server *hcmServer // the connections; shared with later configs

	routes    func() Routes
	router    http.Handler
	jwt       *jwtAuthn
	rbac      []*rbac.Engine // DENY first, then ALLOW, in filter order
	stats     *statsConfig
	tracer    *tracer
	accessLog []*accessLog

	useRemoteAddress bool
	xfcc             hcmv3.HttpConnectionManager_ForwardClientCertDetails
	requestTimeout   time.Duration
	self             *peer
	selfHeader       string
	selfID           string
	selfPrincipal    string
}

func (d *Dataplane) newHCM(st *state, key string, cfg *hcmv3.HttpConnectionManager, tlsTerminated bool) (*hcm, error) {
	h := &hcm{d: d, key: key, cfg: cfg, tlsTerminated: tlsTerminated}
	switch cfg.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		return nil, fmt.Errorf("codec_type %s is not supported", cfg.GetCodecType())
	}
	switch rs := cfg.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		name := rs.Rds.GetRouteConfigName()
		if name == "" {
			return nil, errors.New("rds without route_config_name")
		}
		h.routes = func() Routes { return d.cur.Load().routes[name] }
	case *hcmv3.HttpConnectionManager_RouteConfig:
		rt, err := d.opts.Engine.CompileRoutes(rs.RouteConfig)
		if err != nil {
			return nil, fmt.Errorf("route_config %s: %w", rs.RouteConfig.GetName(), err)
		}
		h.routes = func() Routes { return rt }
	default:
		return nil, fmt.Errorf("route specifier %T is not supported", rs)
	}
	for _, u := range cfg.GetUpgradeConfigs() {
		if !strings.EqualFold(u.GetUpgradeType(), "websocket") && !strings.EqualFold(u.GetUpgradeType(), "connect") {
			return nil, fmt.Errorf("upgrade type %q is not supported", u.GetUpgradeType())
		}
	}
	if err := h.buildFilters(st, cfg.GetHttpFilters()); err != nil {
		return nil, err
	}
	h.useRemoteAddress = cfg.GetUseRemoteAddress().GetValue()
	h.xfcc = cfg.GetForwardClientCertDetails()
	if t := cfg.GetRequestTimeout(); t != nil {
		h.requestTimeout = t.AsDuration()
	}
	for i, al := range cfg.GetAccessLog() {
		l, err := newAccessLog(al)
		if err != nil {
			return nil, fmt.Errorf("access_log %d: %w", i, err)
		}
		h.accessLog = append(h.accessLog, l)
	}
	if cfg.GetTracing() != nil {
		t, err := d.newTracer(cfg.GetTracing(), h.stats != nil && h.stats.reporter == reporterOutbound)
		if err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
		h.tracer = t
	}
	h.self = nodePeer(d.opts.Node)
	h.selfHeader = encodePeer(h.self)
	h.selfID = d.opts.Node.ID
	h.selfPrincipal = principalOf(d.opts.Node.TrustDomain, h.self)
	h.router = d.opts.Engine.NewHandler(h.routes, func() Upstreams { return d.cur.Load().upstreams }, d.log.With("hcm", key))

	if prev := st.prevServers[key]; prev != nil && prev.compatible(cfg, tlsTerminated) {
		h.server = prev
	} else {
		h.server = newHCMServer(key, cfg, tlsTerminated, d.log.With("hcm", key))
		h.server.cur.Store(h)
	}
	st.servers[key] = h.server
	return h, nil
}

func (h *hcm) buildFilters(st *state, filters []*hcmv3.HttpFilter) error {
	if len(filters) == 0 || filters[len(filters)-1].GetName() != routerFilter {
		return fmt.Errorf("http_filters must end with %s", routerFilter)
	}
	for i, f := range filters {
		switch f.GetName() {
		case jwtFilterName:
			j, err := h.d.newJWTFilter(f.GetTypedConfig())
			if err != nil {
				return fmt.Errorf("%s: %w", jwtFilterName, err)
			}
			h.jwt = j
		case rbacFilter:
			cfg := &rbachttp.RBAC{}
			if err := anyTo(f.GetTypedConfig(), cfg); err != nil {
				return fmt.Errorf("%s: %w", rbacFilter, err)
			}
			e, err := rbac.Compile(cfg.GetRules(), cfg.GetShadowRules(), rbac.HTTP)
			if err != nil {
				return fmt.Errorf("%s: %w", rbacFilter, err)
			}
			h.rbac = append(h.rbac, e)
		case faultFilter, corsFilter:
			// The router applies fault injection and CORS per route
			// (typed_per_filter_config); the filter only has to be there.
		case statsFilter:
			sc, err := parseStatsConfig(f.GetTypedConfig())
			if err != nil {
				return fmt.Errorf("%s: %w", statsFilter, err)
			}
			h.stats = sc
		case routerFilter:
			if i != len(filters)-1 {
				return fmt.Errorf("%s must be last", routerFilter)
			}
		default:
			if !f.GetIsOptional() {
				return fmt.Errorf("http filter %q is not supported", f.GetName())
			}
		}
	}
	return nil
}

type connInfoKey struct{}

func connInfoFrom(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	return ci
}

// closeTracer stops the tracer of a configuration no longer in use.
func (h *hcm) closeTracer(after time.Duration) {
	if h.tracer == nil {
		return
	}
	time.AfterFunc(after, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.tracer.shutdown(ctx)
	})
}

// ServeHTTP runs a request through the connection manager: request id,
// forwarding headers, tracing, peer metadata, JWT, RBAC, the router, then
// stats and access logs.
func (h *hcm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.serve(w, r, r.Context(), false)
}

// serve is ServeHTTP for a request whose context is ctx (the HTTP/1.1
// loop hands its requests over without a context of their own). owned
// says the caller made r for this call alone: it is then changed in
// place rather than copied.
func (h *hcm) serve(w http.ResponseWriter, r *http.Request, ctx context.Context, owned bool) {
	start := time.Now()
	ci := connInfoFrom(ctx)
	if ci == nil {
		ci = &connInfo{}
	}
	rw := &respWriter{ResponseWriter: w, h: h}
	rw.spare = rw.vals[:]
	if httphead.Get(r.Header, "X-Request-Id") == "" {
		rw.spare.Set(r.Header, "X-Request-Id", router.NewRequestID())
	}
	remote := h.forwarding(r, ci, &rw.spare)
	h.clientCert(r, ci)

	if h.requestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.requestTimeout)
		defer cancel()
	}
	ctx, readInfo := h.d.opts.Engine.WithRequestInfo(ctx)
	var span *spanState
	if h.tracer != nil {
		ctx, span = h.tracer.start(ctx, r)
	}
	if owned {
		*r = *r.WithContext(ctx)
	} else {
		r = r.WithContext(ctx)
	}
	rw.body = countingBody{ReadCloser: r.Body}
	body := &rw.body
	r.Body = body

	// Peer metadata exchange.
	var srcPeer, dstPeer *peer
	inbound := h.stats != nil && h.stats.inbound()
	if inbound {
		if v := r.Header.Get(hdrPeerMetadata); v != "" {
			srcPeer, _ = decodePeer(v)
		}
		delete(r.Header, hdrPeerMetadata)
		delete(r.Header, hdrPeerMetadataID)
		rw.addPeer = true
	} else if h.stats != nil {
		rw.spare.Set(r.Header, hdrPeerMetadata, h.selfHeader)
		rw.spare.Set(r.Header, hdrPeerMetadataID, h.selfID)
		rw.takePeer = true
	}

	authn, ok := h.authenticate(rw, r)
	if ok && h.authorize(rw, r, ci, remote, authn) {
		h.router.ServeHTTP(rw, r)
	}
	if rw.code == 0 {
		rw.code = http.StatusOK
	}
	ri := readInfo()
	if rw.peer != nil {
		dstPeer = rw.peer
	}
	dur := time.Since(start)
	if span != nil {
		h.tracer.end(span, r, rw.code, ri)
	}
	if h.stats != nil {
		h.record(r, rw, ci, ri, srcPeer, dstPeer, body.n, dur)
	}
	if len(h.accessLog) > 0 {
		e := &logEntry{req: r, rw: rw, ci: ci, ri: ri, start: start, dur: dur, bytesIn: body.n}
		for _, l := range h.accessLog {
			l.write(e)
		}
	}
}

func (h *hcm) record(r *http.Request, rw *respWriter, ci *connInfo, ri RequestInfo, srcPeer, dstPeer *peer, bytesIn int64, dur time.Duration) {
	l := statLabels{code: strconv.Itoa(rw.code), flags: ri.ResponseFlags, protocol: "http", service: ri.Cluster}
	if strings.HasPrefix(httphead.Get(r.Header, "Content-Type"), "application/grpc") {
		l.protocol = "grpc"
		// grpc-status comes as a trailer (declared, or with the
		// net/http trailer prefix) or, for errors, as a header.
		l.grpcStatus = httphead.Get(rw.Header(), "Grpc-Status")
		if l.grpcStatus == "" {
			l.grpcStatus = rw.Header().Get(http.TrailerPrefix + "Grpc-Status")
		}
	}
	td := h.d.opts.Node.TrustDomain
	if h.stats.inbound() {
		l.reporter = "destination"
		l.src, l.dst = srcPeer, h.self
		l.srcPrincipal = ci.principal
		l.dstPrincipal = h.selfPrincipal
		l.security = "none"
		if ci.principal != "" {
			l.security = "mutual_tls"
		}
		if l.service.ServiceHost == "" {
			l.service.ServiceHost = stripPort(r.Host)
		}
	} else {
		l.reporter = "source"
		l.src, l.dst = h.self, dstPeer
		l.srcPrincipal = h.selfPrincipal
		l.dstPrincipal = principalOf(td, dstPeer)
		if dstPeer == nil && ri.Upstream != nil {
			l.dst = &peer{Workload: ri.Upstream.Name, Namespace: ri.Upstream.Namespace, ClusterID: ri.Upstream.Cluster,
				Labels: map[string]string{"service.istio.io/canonical-name": ri.Upstream.Canonical, "service.istio.io/canonical-revision": ri.Upstream.Revision}}
		}
		l.security = "unknown"
		if l.service.ServiceHost == "" {
			l.service.ServiceHost = stripPort(r.Host)
		}
	}
	var vals [numLabels]string
	l.fill(&vals)
	m := h.d.metrics
	series := m.httpSeriesFor(&vals)
	series.requests.Inc()
	series.duration.Observe(float64(dur.Microseconds()) / 1000)
	series.reqBytes.Observe(float64(bytesIn + headerSize(r.Header)))
	series.respBytes.Observe(float64(rw.n + headerSize(rw.Header())))
}

func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

func stripPort(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// forwarding applies use_remote_address and x-forwarded-for, returning the
// client address RBAC's remote_ip sees.
func (h *hcm) forwarding(r *http.Request, ci *connInfo, spare *httphead.Slab) netip.Addr {
	direct := ci.src.Addr()
	xff := r.Header.Values("X-Forwarded-For")
	if h.useRemoteAddress {
		if direct.IsValid() {
			if len(xff) > 0 {
				r.Header.Set("X-Forwarded-For", strings.Join(xff, ",")+", "+direct.String())
			} else {
				r.Header.Set("X-Forwarded-For", direct.String())
			}
		}
		spare.Set(r.Header, "X-Forwarded-Proto", scheme(ci))
		return direct
	}
	if len(xff) > 0 {
		parts := strings.Split(strings.Join(xff, ","), ",")
		if ip, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
			return ip
		}
	}
	if httphead.Get(r.Header, "X-Forwarded-Proto") == "" {
		spare.Set(r.Header, "X-Forwarded-Proto", scheme(ci))
	}
	return direct
}

func scheme(ci *connInfo) string {
	if ci.tls != nil {
		return "https"
	}
	return "http"
}

// clientCert applies forward_client_cert_details for mTLS connections.
func (h *hcm) clientCert(r *http.Request, ci *connInfo) {
	const hdr = "X-Forwarded-Client-Cert"
	switch h.xfcc {
	case hcmv3.HttpConnectionManager_FORWARD_ONLY, hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		return
	case hcmv3.HttpConnectionManager_SANITIZE:
		delete(r.Header, hdr)
		return
	}
	if ci.tls == nil || len(ci.tls.PeerCertificates) == 0 {
		if h.xfcc == hcmv3.HttpConnectionManager_SANITIZE_SET {
			delete(r.Header, hdr)
		}
		return
	}
	sum := sha256.Sum256(ci.tls.PeerCertificates[0].Raw)
	var parts []string
	if len(ci.tls.PeerCertificates) > 0 {
		if self := principalOf(h.d.opts.Node.TrustDomain, h.self); self != "" {
			parts = append(parts, "By="+self)
		}
	}
	parts = append(parts, "Hash="+hex.EncodeToString(sum[:]))
	if ci.principal != "" {
		parts = append(parts, "URI="+ci.principal)
	}
	v := strings.Join(parts, ";")
	if h.xfcc == hcmv3.HttpConnectionManager_APPEND_FORWARD && r.Header.Get(hdr) != "" {
		v = r.Header.Get(hdr) + "," + v
	}
	r.Header.Set(hdr, v)
}

// authorize runs the RBAC filters; a denial answers 403.
func (h *hcm) authorize(w http.ResponseWriter, r *http.Request, ci *connInfo, remote netip.Addr, authn map[string]any) bool {
	if len(h.rbac) == 0 {
		return true
	}
	q := &rbac.Request{
		Principal:       ci.principal,
		DirectRemoteIP:  ci.src.Addr(),
		RemoteIP:        remote,
		DestinationIP:   ci.dst.Addr(),
		DestinationPort: ci.dst.Port(),
		ServerName:      ci.sni,
		Method:          r.Method,
		Host:            r.Host,
		Scheme:          scheme(ci),
		Path:            r.URL.Path,
		RawPath:         r.URL.RequestURI(),
		Headers:         r.Header,
		Metadata:        authn,
	}
	for _, e := range h.rbac {
		d := e.Evaluate(q)
		if d.HasShadow {
			h.d.log.Debug("rbac shadow", "allowed", d.ShadowAllowed, "policy", d.ShadowPolicy, "path", q.Path)
		}
		if !d.Allowed {
			h.d.log.Debug("rbac denied", "policy", d.Policy, "principal", q.Principal, "path", q.Path)
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte("RBAC: access denied"))
			return false
		}
	}
	return true
}

// respWriter records the status and size and does the response side of
// peer metadata exchange.
type respWriter struct {
	http.ResponseWriter
	h           *hcm
	code        int
	n           int64
	addPeer     bool // inbound: answer with our metadata
	takePeer    bool // outbound: read and strip the upstream's
	peer        *peer
	wroteHeader bool
	// spare is what is left of vals for the headers the connection
	// manager sets on the request and the response.
	spare httphead.Slab
	vals  [6]string
	body  countingBody // the request body, counted
}

func (w *respWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	w.code = code
	hdr := w.ResponseWriter.Header()
	if w.takePeer {
		if v := hdr.Get(hdrPeerMetadata); v != "" {
			w.peer, _ = decodePeer(v)
		}
		delete(hdr, hdrPeerMetadata)
		delete(hdr, hdrPeerMetadataID)
	}
	if w.addPeer {
		w.spare.Set(hdr, hdrPeerMetadata, w.h.selfHeader)
		w.spare.Set(hdr, hdrPeerMetadataID, w.h.selfID)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *respWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// AdoptHeader passes the router's request on (router.HeaderAdopter).
func (w *respWriter) AdoptHeader(h http.Header) bool {
	a, ok := w.ResponseWriter.(router.HeaderAdopter)
	return ok && !w.wroteHeader && a.AdoptHeader(h)
}

type countingBody struct {
	ReadCloser interface {
		Read([]byte) (int, error)
		Close() error
	}
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *countingBody) Close() error { return b.ReadCloser.Close() }
