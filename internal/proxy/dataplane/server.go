package dataplane

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/protobuf/proto"
)

// hcmServer owns the HTTP connections of one filter chain. It outlives
// configuration changes: each request runs on the connection manager
// configuration current when it starts (cur), so a new snapshot never
// closes connections. A server is only shut down (gracefully) when its
// chain disappears or its protocol settings change.
type hcmServer struct {
	key           string
	protoKey      []byte // the settings the server was built with
	tlsTerminated bool

	srv     *http.Server
	ln      *chanListener
	handler http.Handler
	// direct serves an HTTP/1.1 request with the connection manager
	// current when it starts, given the request's context.
	direct func(w http.ResponseWriter, r *http.Request, ctx context.Context)

	// HTTP/1.1 connections served by the data plane's own loop
	// (h1server.go).
	http1, http2      bool // the codecs the connection manager accepts
	idle              time.Duration
	readHeaderTimeout time.Duration
	log               *slog.Logger
	draining          atomic.Bool
	h1mu              sync.Mutex
	h1conns           map[*h1ServerConn]struct{}
	h1closed          bool

	conns   sync.Map // net.Conn → *connInfo
	cur     atomic.Pointer[hcm]
	started atomic.Bool
	next    atomic.Pointer[hcmServer] // the server that replaced this one
}

// serverSettings is the part of an HCM the http.Server itself depends on.
func serverSettings(cfg *hcmv3.HttpConnectionManager) []byte {
	s := &hcmv3.HttpConnectionManager{
		CodecType:                 cfg.GetCodecType(),
		CommonHttpProtocolOptions: cfg.GetCommonHttpProtocolOptions(),
		RequestHeadersTimeout:     cfg.GetRequestHeadersTimeout(),
		Http2ProtocolOptions:      cfg.GetHttp2ProtocolOptions(),
		HttpProtocolOptions:       cfg.GetHttpProtocolOptions(),
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	return b
}

func (s *hcmServer) compatible(cfg *hcmv3.HttpConnectionManager, tlsTerminated bool) bool {
	return s.tlsTerminated == tlsTerminated && string(s.protoKey) == string(serverSettings(cfg))
}

func newHCMServer(key string, cfg *hcmv3.HttpConnectionManager, tlsTerminated bool, log *slog.Logger) *hcmServer {
	s := &hcmServer{key: key, protoKey: serverSettings(cfg), tlsTerminated: tlsTerminated, log: log, h1conns: map[*h1ServerConn]struct{}{}}
	s.ln = newChanListener(func(c net.Conn) {
		v, _ := s.conns.LoadAndDelete(c)
		info, _ := v.(*connInfo)
		if n := s.next.Load(); n != nil && info != nil {
			n.serve(c, info)
			return
		}
		c.Close()
	})
	idle := time.Hour
	if t := cfg.GetCommonHttpProtocolOptions().GetIdleTimeout(); t != nil {
		idle = t.AsDuration()
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(cfg.GetCodecType() != hcmv3.HttpConnectionManager_HTTP2)
	protos.SetHTTP2(cfg.GetCodecType() != hcmv3.HttpConnectionManager_HTTP1)
	protos.SetUnencryptedHTTP2(cfg.GetCodecType() != hcmv3.HttpConnectionManager_HTTP1)
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.cur.Load().ServeHTTP(w, r)
	})
	if !tlsTerminated && cfg.GetCodecType() != hcmv3.HttpConnectionManager_HTTP1 {
		// net/http serves h2c with prior knowledge itself; h2c takes
		// over HTTP/1.1 "Upgrade: h2c" requests (the connection is
		// then hijacked, so draining cannot wait for it).
		handler = h2c.NewHandler(handler, &http2.Server{IdleTimeout: idle})
	}
	s.handler = handler
	s.direct = func(w http.ResponseWriter, r *http.Request, ctx context.Context) { s.cur.Load().serve(w, r, ctx, true) }
	s.http1 = cfg.GetCodecType() != hcmv3.HttpConnectionManager_HTTP2
	s.http2 = cfg.GetCodecType() != hcmv3.HttpConnectionManager_HTTP1
	s.idle = idle
	s.srv = &http.Server{
		Handler:           handler,
		Protocols:         protos,
		IdleTimeout:       idle,
		ReadHeaderTimeout: 60 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if v, ok := s.conns.Load(c); ok {
				return context.WithValue(ctx, connInfoKey{}, v.(*connInfo))
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				s.conns.Delete(c)
			}
		},
	}
	if t := cfg.GetRequestHeadersTimeout(); t != nil && t.AsDuration() > 0 {
		s.srv.ReadHeaderTimeout = t.AsDuration()
	}
	s.readHeaderTimeout = s.srv.ReadHeaderTimeout
	return s
}

func (s *hcmServer) start() {
	if s.started.Swap(true) {
		return
	}
	go func() { _ = s.srv.Serve(s.ln) }()
}

// serve hands one connection to the server; a connection that arrives
// after this server was replaced goes to its replacement.
func (s *hcmServer) serve(c net.Conn, info *connInfo) {
	for cur := s; cur != nil; cur = cur.next.Load() {
		select {
		case <-cur.ln.done:
			continue
		default:
		}
		if ok, br := cur.h1Eligible(c); ok {
			if cur.serveH1(c, br, info) {
				return
			}
			continue
		}
		cur.conns.Store(c, info)
		select {
		case cur.ln.ch <- c:
			return
		case <-cur.ln.done:
			cur.conns.Delete(c)
		}
	}
	c.Close()
}

// shutdown stops accepting, lets in-flight requests finish and closes idle
// connections, until ctx ends.
func (s *hcmServer) shutdown(ctx context.Context) error {
	s.ln.Close()
	h1 := make(chan error, 1)
	go func() { h1 <- s.shutdownH1(ctx) }()
	if !s.started.Load() {
		return <-h1
	}
	s.srv.SetKeepAlivesEnabled(false)
	err := s.srv.Shutdown(ctx)
	if h1err := <-h1; err == nil {
		err = h1err
	}
	if h := s.cur.Load(); h != nil && h.tracer != nil {
		_ = h.tracer.tp.ForceFlush(ctx)
	}
	return err
}

func (s *hcmServer) close() {
	s.ln.Close()
	s.closeH1()
	if s.started.Load() {
		_ = s.srv.Close()
	}
}

// chanListener is a net.Listener fed by the data plane's accept loops.
type chanListener struct {
	reroute func(net.Conn)
	ch      chan net.Conn
	done    chan struct{}
	once    sync.Once
}

func newChanListener(reroute func(net.Conn)) *chanListener {
	return &chanListener{reroute: reroute, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	for {
		select {
		case c := <-l.ch:
			select {
			case <-l.done:
				// Closed while handing over: the server may already
				// be shut down, so the connection goes to the
				// replacement instead.
				go l.reroute(c)
				continue
			default:
			}
			return c, nil
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
