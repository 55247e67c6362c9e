package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/certs/certstest"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient/xdstest"
)

const nodeID = "sidecar~127.0.0.1~app-1.shop~shop.svc.cluster.local"

// fakeDataplane is ready once a snapshot with listeners was applied.
type fakeDataplane struct {
	mu          sync.Mutex
	snap        *config.Snapshot
	drainStart  chan struct{}
	drainBudget time.Duration
	closed      atomic.Bool
	opts        DataplaneOptions
}

func (f *fakeDataplane) Apply(s *config.Snapshot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = s
	return nil
}

func (f *fakeDataplane) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap != nil && len(f.snap.Listeners) > 0
}

func (f *fakeDataplane) Drain(ctx context.Context) error {
	dl, _ := ctx.Deadline()
	f.mu.Lock()
	f.drainBudget = time.Until(dl)
	f.mu.Unlock()
	close(f.drainStart)
	<-ctx.Done() // in-flight work that never ends
	return ctx.Err()
}

func (f *fakeDataplane) ConfigDump() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.snap == nil {
		return []byte(`{"listeners":[]}`), nil
	}
	names := []string{}
	for n := range f.snap.Listeners {
		names = append(names, fmt.Sprintf("%q", n))
	}
	return []byte(`{"listeners":[` + strings.Join(names, ",") + `]}`), nil
}

func (f *fakeDataplane) Close() error { f.closed.Store(true); return nil }

type running struct {
	ca    *certstest.CA
	cp    *xdstest.ControlPlane
	dp    *fakeDataplane
	addrs Addresses
	stop  context.CancelFunc
	done  chan error
}

func (r *running) get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func start(t *testing.T, probers string, extraEnv ...string) *running {
	t.Helper()
	r := &running{ca: certstest.Start(t, 0), dp: &fakeDataplane{drainStart: make(chan struct{})}, done: make(chan error, 1)}
	r.cp = xdstest.Start(t, r.ca)
	env := []string{
		"POD_NAME=app-1", "POD_NAMESPACE=shop", "INSTANCE_IP=127.0.0.1", "SERVICE_ACCOUNT=app",
		"DISCOVERY_ADDRESS=" + r.cp.Addr, "CA_ADDRESS=" + r.ca.Addr, "TRUST_DOMAIN=cluster.local",
		`PROXY_CONFIG={"terminationDrainDuration":"1s","discoveryAddress":"ignored:1"}`,
		"ISTIO_META_INTERCEPTION_MODE=NONE",
	}
	if probers != "" {
		env = append(env, "ISTIO_KUBE_APP_PROBERS="+probers)
	}
	env = append(env, extraEnv...)
	listening := make(chan Addresses, 1)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	opts := Options{
		Env: env, RootCertFile: r.ca.RootFile, TokenFile: r.ca.TokenFile(t, "shop", "app"),
		LabelsFile:   t.TempDir() + "/labels", // absent
		AdminAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", StatsAddress: "127.0.0.1:0",
		NewDataplane: func(o DataplaneOptions) (Dataplane, error) { r.dp.opts = o; return r.dp, nil },
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listening:    func(a Addresses) { listening <- a },
	}
	go func() { r.done <- Run(ctx, opts) }()
	select {
	case r.addrs = <-listening:
	case err := <-r.done:
		t.Fatalf("agent ended: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("the agent did not stop")
		}
	})
	return r
}

func config1() map[resourcev3.Type][]types.Resource {
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType:  {&cluster.Cluster{Name: "BlackHoleCluster", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}}},
		resourcev3.ListenerType: {&listener.Listener{Name: "virtualInbound"}},
	}
}

func TestReadyAndWait(t *testing.T) {
	r := start(t, "")
	// No configuration yet: not ready, and "proxy wait" gives up.
	if code, body := r.get(t, r.addrs.Health, "/healthz/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("ready before any configuration: %d %s", code, body)
	}
	if err := Wait(context.Background(), "http://"+r.addrs.Health+"/healthz/ready", 300*time.Millisecond, 50*time.Millisecond); err == nil {
		t.Fatal("wait succeeded before the proxy was ready")
	}
	r.cp.Set(t, nodeID, "v1", config1())
	if err := Wait(context.Background(), "http://"+r.addrs.Health+"/healthz/ready", 20*time.Second, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The data plane was given the node and the certificate source.
	if r.dp.opts.Node.ID != nodeID || r.dp.opts.Node.Metadata["INTERCEPTION_MODE"] != "NONE" || r.dp.opts.Registry == nil {
		t.Fatalf("data plane options %+v", r.dp.opts)
	}
	if c, err := r.dp.opts.Secrets.WorkloadCertificate(); err != nil || c.Leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/app" {
		t.Fatalf("workload certificate: %v", err)
	}
	for _, addr := range []string{r.addrs.Status, r.addrs.Admin} {
		if code, _ := r.get(t, addr, "/healthz/ready"); code != http.StatusOK {
			t.Fatalf("%s /healthz/ready: %d", addr, code)
		}
	}
	if code, body := r.get(t, r.addrs.Admin, "/ready"); code != 200 || !strings.Contains(body, "LIVE") {
		t.Fatalf("admin /ready: %d %s", code, body)
	}
	if code, body := r.get(t, r.addrs.Admin, "/config_dump"); code != 200 || body != `{"listeners":["virtualInbound"]}` {
		t.Fatalf("config_dump: %d %s", code, body)
	}
	if _, body := r.get(t, r.addrs.Admin, "/stats"); !strings.Contains(body, "mizzen_proxy_xds_connected: 1") ||
		!strings.Contains(body, `mizzen_proxy_xds_updates_total{type="lds"}: 1`) {
		t.Fatalf("admin /stats:\n%s", body)
	}
	for _, addr := range []string{r.addrs.Stats, r.addrs.Status} {
		if _, body := r.get(t, addr, "/stats/prometheus"); !strings.Contains(body, "mizzen_proxy_cert_expiry_timestamp_seconds") ||
			!strings.Contains(body, "go_goroutines") {
			t.Fatalf("%s /stats/prometheus lacks the proxy's metrics:\n%.500s", addr, body)
		}
	}
}

func TestDrainOnTermination(t *testing.T) {
	r := start(t, "")
	r.cp.Set(t, nodeID, "v1", config1())
	if err := Wait(context.Background(), "http://"+r.addrs.Health+"/healthz/ready", 20*time.Second, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	r.stop() // SIGTERM
	<-r.dp.drainStart
	// While draining the proxy reports not ready.
	if code, body := r.get(t, r.addrs.Health, "/healthz/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("ready while draining: %d %s", code, body)
	}
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run returned %v after a termination", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the drain was not bounded")
	}
	// The drain was bounded by terminationDrainDuration (1s).
	if r.dp.drainBudget <= 0 || r.dp.drainBudget > time.Second {
		t.Fatalf("drain budget %v, want at most the configured 1s", r.dp.drainBudget)
	}
	if !r.dp.closed.Load() {
		t.Fatal("the data plane was not closed")
	}
}

func TestQuitQuitQuit(t *testing.T) {
	r := start(t, "")
	resp, err := http.Post("http://"+r.addrs.Admin+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("quitquitquit did not stop the proxy")
	}
}

func TestAppHealth(t *testing.T) {
	var gotHeader atomic.Value
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			gotHeader.Store(r.Header.Get("X-Probe"))
			w.WriteHeader(http.StatusOK)
		case "/ready":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer app.Close()
	port := app.Listener.Addr().String()
	port = port[strings.LastIndex(port, ":")+1:]
	// Exactly what the injector writes (internal/inject rewriteProbes).
	probers := fmt.Sprintf(`{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":%s,"scheme":"HTTP","httpHeaders":[{"name":"X-Probe","value":"yes"}]},"timeoutSeconds":2},`+
		`"/app-health/app/readyz":{"httpGet":{"path":"/ready","port":%s,"scheme":"HTTP"}},`+
		`"/app-health/down/livez":{"httpGet":{"path":"/","port":1,"scheme":"HTTP"}}}`, port, port)
	r := start(t, probers)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/app-health/app/livez", 200},
		{"/app-health/app/readyz", 503},
		{"/app-health/down/livez", 500},
		{"/app-health/app/startupz", 404},
	} {
		if code, body := r.get(t, r.addrs.Status, tc.path); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.path, code, body, tc.want)
		}
	}
	if gotHeader.Load() != "yes" {
		t.Errorf("the probe's header was not sent: %v", gotHeader.Load())
	}
}

func TestParseProxyConfigAndProbers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		drain   time.Duration
		wantErr bool
	}{
		{"", 5 * time.Second, false},
		{`{"terminationDrainDuration":"30s","concurrency":2}`, 30 * time.Second, false},
		{`{"terminationDrainDuration":"soon"}`, 0, true},
		{`{`, 0, true},
	} {
		_, d, err := ParseProxyConfig(tc.in)
		if (err != nil) != tc.wantErr || d != tc.drain {
			t.Errorf("%q: drain %v err %v", tc.in, d, err)
		}
	}
	for _, bad := range []string{`{`, `{"/app-health/a/livez":{}}`, `{"/app-health/a/livez":{"httpGet":{"port":"http"}}}`} {
		if _, err := ParseProbers(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
	if _, err := newAgent(Options{}); err == nil || !strings.Contains(err.Error(), "no data plane") {
		t.Error("an agent without a data plane started")
	}
}

func TestProcs(t *testing.T) {
	for _, tc := range []struct {
		mode               config.Mode
		proxyConfig, procs string
		want               int
	}{
		{config.ModeSidecar, "", "", 1},
		{config.ModeRouter, "", "", 0},
		{config.ModeSidecar, `{"concurrency":2}`, "", 2},
		{config.ModeRouter, `{"concurrency":3}`, "", 3},
		{config.ModeSidecar, `{"concurrency":0}`, "", 0},
		{config.ModeSidecar, `{"concurrency":2}`, "4", 0}, // GOMAXPROCS wins
		{config.ModeSidecar, `{`, "", 1},
	} {
		if got := Procs(tc.mode, tc.proxyConfig, tc.procs); got != tc.want {
			t.Errorf("Procs(%s, %q, %q) = %d, want %d", tc.mode, tc.proxyConfig, tc.procs, got, tc.want)
		}
	}
}
