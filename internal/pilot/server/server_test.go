package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

const waitFor = 10 * time.Second

type env struct {
	t    *testing.T
	pki  *pki
	disc *fakeDiscovery
	srv  *Server
	reg  *prometheus.Registry
	addr string
}

func basePush(version string, vsHosts ...string) *model.PushContext {
	p := &model.PushContext{Version: version, DomainSuffix: "cluster.local", TrustDomain: "cluster.local",
		Endpoints: map[string][]*model.Endpoint{}}
	for _, h := range []string{"reviews", "ratings"} {
		svc := &model.Service{Hostname: h + ".default.svc.cluster.local", Name: h, Namespace: "default",
			Ports: []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}}}
		p.Services = append(p.Services, svc)
		p.Endpoints[model.ServiceKey(svc)] = []*model.Endpoint{{Address: "10.1.0.1", Port: 8080, ServicePort: 80, Ready: true}}
	}
	model.SortServices(p.Services)
	for i, h := range vsHosts {
		p.VirtualServices = append(p.VirtualServices, model.Config[*networking.VirtualService]{
			Meta: model.Meta{Kind: model.KindVirtualService, Name: "vs" + string(rune('a'+i)), Namespace: "default"},
			Spec: &networking.VirtualService{Hosts: []string{h}, Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{
				Destination: &networking.Destination{Host: "reviews.default.svc.cluster.local"}}}}}}})
	}
	return p
}

func start(t *testing.T, opts Options) *env {
	t.Helper()
	e := &env{t: t, pki: newPKI(t), disc: &fakeDiscovery{}, reg: prometheus.NewRegistry()}
	e.disc.push.Store(basePush("1", "a.example.com"))
	opts.Discovery, opts.Generate, opts.GenerateEndpoints = e.disc, fakeGenerate, fakeEndpoints
	opts.Registry = e.reg
	if opts.DebounceAfter == 0 {
		opts.DebounceAfter = 10 * time.Millisecond
	}
	opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		opts.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(e.pki.serverTLS(t))))
	srv.Register(ctx, gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	go func() { _ = gs.Serve(lis) }()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// dial connects an xDS client with a certificate for ns/sa.
func (e *env) dial(cfg *tls.Config, opts xdsclient.Options) (*xdsclient.Client, <-chan xdsclient.Update) {
	e.t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(func() { cancel(); conn.Close() })
	ch := make(chan xdsclient.Update, 1000)
	opts.Updates = ch
	c, err := xdsclient.Dial(ctx, conn, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, ch
}

func dialErr(addr string, cfg *tls.Config) (*xdsclient.Client, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, err
	}
	return xdsclient.Dial(context.Background(), conn, xdsclient.Options{Node: testNode("a", "default", "sa")})
}

// synced waits until the client accepted routes and endpoints, then
// drains the updates seen so far.
func synced(t *testing.T, c *xdsclient.Client, ch <-chan xdsclient.Update) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for len(c.Resources(xdsclient.RouteType)) == 0 || len(c.Resources(xdsclient.EndpointType)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("client did not receive routes and endpoints")
		}
		select {
		case <-c.Done():
			t.Fatalf("stream ended: %v", c.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// waitUpdate returns the first update of typeURL that satisfies ok.
func waitUpdate(t *testing.T, c *xdsclient.Client, ch <-chan xdsclient.Update, typeURL string, ok func(xdsclient.Update) bool) xdsclient.Update {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case u := <-ch:
			if u.TypeURL == typeURL && ok(u) {
				return u
			}
		case <-c.Done():
			t.Fatalf("stream ended: %v", c.Err())
		case <-timeout:
			t.Fatalf("no matching %s update within %s", typeURL, waitFor)
		}
	}
}

func hasDomain(u xdsclient.Update, domain string) bool {
	rc, ok := u.Resources["80"].(*routev3.RouteConfiguration)
	if !ok {
		return false
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			if d == domain {
				return true
			}
		}
	}
	return false
}

func anyUpdate(xdsclient.Update) bool { return true }

func TestRefusesStreamsWithoutVerifiedCertificate(t *testing.T) {
	e := start(t, Options{})
	// TLS without a client certificate.
	c, err := dialErr(e.addr, e.pki.clientTLS(t, "", ""))
	if err == nil {
		err = c.Wait()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a client certificate: %v, want Unauthenticated", err)
	}
	// A certificate from another CA does not even pass the handshake.
	other := newPKI(t).clientTLS(t, "default", "sa")
	other.RootCAs = e.pki.root.RootPool()
	if c, err := dialErr(e.addr, other); err == nil {
		if err := c.Wait(); err == nil {
			t.Error("a certificate from another CA was accepted")
		}
	}
	// Plaintext to a TLS port fails too.
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c2, err := xdsclient.Dial(context.Background(), conn, xdsclient.Options{Node: testNode("a", "default", "sa")})
	if err == nil {
		if err = c2.Wait(); err == nil {
			t.Error("plaintext stream was served")
		}
	}
	if n := len(e.srv.ConnectedProxies()); n != 0 {
		t.Errorf("%d proxies connected, want 0", n)
	}
}

func TestRefusesForgedNode(t *testing.T) {
	e := start(t, Options{})
	for name, node := range map[string]struct{ pod, ns, sa string }{
		"other namespace":       {"a", "kube-system", "sa"},
		"other service account": {"a", "default", "admin"},
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(e.pki.clientTLS(t, "default", "sa"))))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c, err := xdsclient.Dial(context.Background(), conn, xdsclient.Options{Node: testNode(node.pod, node.ns, node.sa)})
			if err == nil {
				err = c.Wait()
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("got %v, want PermissionDenied", err)
			}
		})
	}
}

func TestPushesChangesSotwAndDelta(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			e := start(t, Options{})
			c, ch := e.dial(e.pki.clientTLS(t, "default", "sa"), xdsclient.Options{Node: testNode("p", "default", "sa"), Delta: delta})
			synced(t, c, ch)
			if !hasDomain(xdsclient.Update{Resources: c.Resources(xdsclient.RouteType)}, "a.example.com") {
				t.Error("initial routes lack a.example.com")
			}
			if n := len(c.Resources(xdsclient.EndpointType)); n != 2 {
				t.Errorf("%d load assignments, want 2", n)
			}

			e.disc.push.Store(basePush("2", "a.example.com", "b.example.com"))
			e.srv.OnChange(Change{})
			waitUpdate(t, c, ch, xdsclient.RouteType, func(u xdsclient.Update) bool { return hasDomain(u, "b.example.com") })
			if got := e.srv.ConnectedProxies(); len(got) != 1 || got[0] != testNode("p", "default", "sa").GetId() {
				t.Errorf("connected %v", got)
			}
			if v := toFloat64(t, e.srv.metrics.pushes.WithLabelValues("rds")); v < 2 {
				t.Errorf("pilot_xds_pushes{type=rds} = %v, want >= 2", v)
			}
		})
	}
}

// TestEndpointsOnlyPush: an endpoint change sends EDS for the changed
// service only, and nothing else.
func TestEndpointsOnlyPush(t *testing.T) {
	e := start(t, Options{})
	c, ch := e.dial(e.pki.clientTLS(t, "default", "sa"), xdsclient.Options{Node: testNode("p", "default", "sa")})
	synced(t, c, ch)
	builds := e.disc.builds.Load()

	p := basePush("2", "a.example.com")
	svc := p.ServicesByHost("ratings.default.svc.cluster.local")[0]
	p.Endpoints[model.ServiceKey(svc)] = append(p.Endpoints[model.ServiceKey(svc)], &model.Endpoint{Address: "10.1.0.2", Port: 8080, ServicePort: 80})
	e.disc.push.Store(p)
	e.srv.OnChange(Change{EndpointsOnly: true, Hostnames: []string{svc.Hostname}})
	u := waitUpdate(t, c, ch, xdsclient.EndpointType, anyUpdate)
	if n := len(u.Resources); n != 2 {
		t.Fatalf("%d load assignments, want 2", n)
	}
	got := u.Resources["outbound|80||ratings.default.svc.cluster.local"]
	if s := prototext.Format(got); !strings.Contains(s, "10.1.0.2") {
		t.Errorf("ratings endpoints lack the new address: %s", s)
	}
	select {
	case u := <-ch:
		t.Errorf("unexpected %s update after an endpoints-only change", u.TypeURL)
	case <-time.After(300 * time.Millisecond):
	}
	if e.disc.builds.Load() != builds {
		t.Error("an endpoints-only change rebuilt the proxy")
	}
}

// TestNACK: a rejected response is counted, not sent again, and later
// changes still arrive.
func TestNACK(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) { testNACK(t, delta) })
	}
}

func testNACK(t *testing.T, delta bool) {
	e := start(t, Options{})
	reject := func(u xdsclient.Update) string {
		if u.TypeURL == xdsclient.RouteType && hasDomain(u, "bad.example.com") {
			return "route uses an unsupported field"
		}
		return ""
	}
	c, ch := e.dial(e.pki.clientTLS(t, "default", "sa"), xdsclient.Options{Node: testNode("p", "default", "sa"), Reject: reject, Delta: delta})
	synced(t, c, ch)
	good := c.Acked(xdsclient.RouteType)

	e.disc.push.Store(basePush("2", "a.example.com", "bad.example.com"))
	e.srv.OnChange(Change{})
	waitUpdate(t, c, ch, xdsclient.RouteType, func(u xdsclient.Update) bool { return u.Rejected != "" })
	select {
	case u := <-ch:
		t.Fatalf("after a NACK the server sent %s version %s (rejected=%q): a resend loop", u.TypeURL, u.Version, u.Rejected)
	case <-time.After(500 * time.Millisecond):
	}
	if v := toFloat64(t, e.srv.metrics.rejects.WithLabelValues("rds")); v != 1 {
		t.Errorf("pilot_xds_rejects{type=rds} = %v, want 1", v)
	}
	if c.Acked(xdsclient.RouteType) != good {
		t.Errorf("client holds %s, want the last good %s", c.Acked(xdsclient.RouteType), good)
	}
	conns := e.srv.Connections()
	if len(conns) != 1 || conns[0].Types[xdsclient.RouteType].RejectReason != "route uses an unsupported field" {
		t.Errorf("connections: %+v", conns)
	}

	e.disc.push.Store(basePush("3", "a.example.com", "c.example.com"))
	e.srv.OnChange(Change{})
	u := waitUpdate(t, c, ch, xdsclient.RouteType, func(u xdsclient.Update) bool { return hasDomain(u, "c.example.com") })
	if u.Rejected != "" {
		t.Errorf("fixed config rejected: %s", u.Rejected)
	}
}

func TestSkippedAreReported(t *testing.T) {
	e := start(t, Options{})
	p := basePush("2", "a.example.com")
	p.VirtualServices[0].Labels = map[string]string{"invalid": "no such gateway"}
	e.disc.push.Store(p)
	c, ch := e.dial(e.pki.clientTLS(t, "default", "sa"), xdsclient.Options{Node: testNode("p", "default", "sa")})
	waitUpdate(t, c, ch, xdsclient.RouteType, anyUpdate)
	got := e.disc.invalids()
	if len(got) == 0 || got[0] != "VirtualService/default/vsa: no such gateway" {
		t.Errorf("reported %v", got)
	}
}

func TestConfigDumpAndConnections(t *testing.T) {
	e := start(t, Options{})
	node := testNode("p", "default", "sa")
	c, ch := e.dial(e.pki.clientTLS(t, "default", "sa"), xdsclient.Options{Node: node})
	synced(t, c, ch)
	h := e.srv.DebugHandler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/config_dump?proxyID="+node.GetId(), nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("config_dump: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{`"a.example.com"`, `"outbound|80||ratings.default.svc.cluster.local"`, `"0.0.0.0_80"`, `"10.1.0.1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("config_dump lacks %s:\n%s", want, body)
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/config_dump?proxyID=nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown proxy: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/connections", nil))
	if !strings.Contains(rec.Body.String(), "spiffe://cluster.local/ns/default/sa/sa") {
		t.Errorf("connections: %s", rec.Body)
	}
	if v := toFloat64(t, e.srv.metrics.connected); v != 1 {
		t.Errorf("pilot_xds = %v, want 1", v)
	}
	c.Close()
	if err := c.Wait(); err != nil && !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
		t.Logf("stream ended with %v", err)
	}
	deadline := time.Now().Add(waitFor)
	for len(e.srv.ConnectedProxies()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("proxy still listed after disconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		e.srv.mu.Lock()
		_, held := e.srv.nodes[node.GetId()]
		e.srv.mu.Unlock()
		if !held {
			break // forgotten
		}
		if time.Now().After(deadline) {
			t.Fatal("the disconnected proxy's configuration is still held")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDebounce: a burst of changes is one push; continuous churn still
// pushes once DebounceMax passed.
func TestDebounce(t *testing.T) {
	e := start(t, Options{DebounceAfter: 200 * time.Millisecond, DebounceMax: 400 * time.Millisecond})
	c, ch := e.dial(e.pki.clientTLS(t, "default", "sa"), xdsclient.Options{Node: testNode("p", "default", "sa")})
	waitUpdate(t, c, ch, xdsclient.RouteType, anyUpdate)
	conv := func() uint64 {
		m := &dtoMetric{}
		return m.count(t, e.srv.metrics.convergence)
	}
	before := conv()
	for i := 0; i < 10; i++ {
		e.srv.OnChange(Change{})
	}
	deadline := time.Now().Add(waitFor)
	for conv() == before {
		if time.Now().After(deadline) {
			t.Fatal("no push after a burst")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := conv() - before; n != 1 {
		t.Errorf("a burst of 10 changes made %d pushes, want 1", n)
	}
	// Churn every 50ms for 1.5s: the quiet period never comes, the bound
	// still pushes.
	before = conv()
	stop := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(stop) {
		e.srv.OnChange(Change{})
		time.Sleep(50 * time.Millisecond)
	}
	if n := conv() - before; n < 2 {
		t.Errorf("continuous churn made %d pushes, want at least 2", n)
	}
}

func TestParseSPIFFEID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Identity
		ok   bool
	}{
		{"spiffe://cluster.local/ns/default/sa/bookinfo", Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "bookinfo"}, true},
		{"spiffe://td/ns/a/sa/b", Identity{TrustDomain: "td", Namespace: "a", ServiceAccount: "b"}, true},
		{"https://cluster.local/ns/default/sa/x", Identity{}, false},
		{"spiffe://cluster.local/ns/default", Identity{}, false},
		{"spiffe://cluster.local/ns//sa/x", Identity{}, false},
		{"spiffe://cluster.local/sa/x/ns/y", Identity{}, false},
		{"spiffe://cluster.local/ns/a/sa/b/c", Identity{}, false},
	} {
		got, err := ParseSPIFFEID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSPIFFEID(%q) = %+v, %v", tc.in, got, err)
		}
	}
}
