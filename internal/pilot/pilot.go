// Package pilot runs the Mizzen control plane: service discovery
// (internal/pilot/discovery) feeding the xDS server (internal/pilot/server)
// with the translation of internal/xds, the mesh certificate authority
// (internal/ca) on the same TLS gRPC port, the validating webhook, and the
// readiness, metrics and debug endpoints.
//
// Ports (defaults, as the chart expects them): 15012 gRPC over TLS (ADS with
// a client certificate required, the CSR service with a ServiceAccount
// token), 15010 plaintext gRPC (off unless PlaintextAddr is set), 8080
// /ready, 15014 /metrics, /debug/config_dump, /debug/connections and
// /debug/pprof, 15017 the webhook (/validate).
//
// The CA needs no leader election: the self-signed root is created with
// create-if-absent (every replica ends up with the one root that won), and
// signing is stateless.
package pilot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	securitypb "istio.io/api/security/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/internal/pilot/server"
)

// Options configures Run. Addresses are host:port; port 0 picks a free
// port (see AddressesFile and OnListening).
type Options struct {
	// Kubeconfig is used when set (running outside the cluster), else the
	// in-cluster configuration; RestConfig, when set, wins over both.
	Kubeconfig string
	RestConfig *rest.Config

	// Namespace is the control plane's namespace (POD_NAMESPACE).
	Namespace string
	// Revision is the control plane revision ("" or "default" for none).
	Revision     string
	DomainSuffix string // default cluster.local
	// MeshConfigPath is the mesh config file; a missing file means the
	// defaults. It is watched for changes.
	MeshConfigPath string
	// CACertsDir holds a plug-in CA as files (default /etc/cacerts); when
	// it has no ca-cert.pem the root comes from Secrets (cacerts, else the
	// self-signed istio-ca-secret, created when absent).
	CACertsDir string
	// ExtraSANs are added to the serving certificate (DNS names or IPs),
	// e.g. 127.0.0.1 for tests.
	ExtraSANs []string

	GRPCAddr       string // default :15012
	PlaintextAddr  string // default off
	HTTPAddr       string // /ready; default :8080
	MonitoringAddr string // /metrics, /debug; default :15014
	WebhookAddr    string // default :15017
	// PlaintextNodeIdentity lets xDS clients on PlaintextAddr identify
	// themselves by node metadata: local debugging only.
	PlaintextNodeIdentity bool

	DebounceAfter, DebounceMax time.Duration
	// ShutdownTimeout bounds the graceful stop of streams (default 10s).
	ShutdownTimeout time.Duration
	// RootResync is how often the root ConfigMaps are re-checked (default 10m).
	RootResync time.Duration

	// AddressesFile, when set, receives the bound addresses as JSON
	// (Addresses) once every port listens.
	AddressesFile string
	// OnListening is called with the bound addresses (tests).
	OnListening func(Addresses)
	// Webhook is the validating webhook handler mounted on /validate;
	// default the validation package's.
	Webhook http.Handler
	// ValidatingWebhookConfig names the ValidatingWebhookConfiguration
	// whose caBundle the control plane keeps set to the mesh root; none
	// when empty.
	ValidatingWebhookConfig string
	Log                     *slog.Logger
}

// Addresses are the bound listen addresses.
type Addresses struct {
	GRPC       string `json:"grpc"`
	Plaintext  string `json:"plaintext,omitempty"`
	HTTP       string `json:"http"`
	Monitoring string `json:"monitoring"`
	Webhook    string `json:"webhook"`
}

func (o *Options) defaults() {
	if o.DomainSuffix == "" {
		o.DomainSuffix = "cluster.local"
	}
	if o.CACertsDir == "" {
		o.CACertsDir = "/etc/cacerts"
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = ":15012"
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = ":8080"
	}
	if o.MonitoringAddr == "" {
		o.MonitoringAddr = ":15014"
	}
	if o.WebhookAddr == "" {
		o.WebhookAddr = ":15017"
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.RootResync <= 0 {
		o.RootResync = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// restConfig picks the API server configuration.
func (o *Options) restConfig() (*rest.Config, error) {
	if o.RestConfig != nil {
		return rest.CopyConfig(o.RestConfig), nil
	}
	if o.Kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	}
	return rest.InClusterConfig()
}

// Run runs the control plane until ctx ends, then shuts down gracefully:
// not ready at once, xDS streams and CSR calls drained for at most
// ShutdownTimeout, HTTP servers closed.
func Run(ctx context.Context, opts Options) error {
	opts.defaults()
	log := opts.Log
	if opts.Namespace == "" {
		return errors.New("the control plane namespace is required (POD_NAMESPACE)")
	}
	cfg, err := opts.restConfig()
	if err != nil {
		return fmt.Errorf("API server configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	istio, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return err
	}

	mesh, err := loadMesh(opts.MeshConfigPath, log)
	if err != nil {
		return err
	}
	root, err := ca.LoadRootFromDir(opts.CACertsDir, time.Now())
	if err != nil {
		return fmt.Errorf("plug-in CA in %s: %w", opts.CACertsDir, err)
	}
	if root == nil {
		if root, err = ca.LoadOrCreateRoot(ctx, kube, opts.Namespace); err != nil {
			return fmt.Errorf("mesh CA root: %w", err)
		}
	}
	log.Info("mesh CA root loaded", "source", root.Source, "notAfter", root.RootCert.NotAfter)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	installHooks()
	disc, err := newDiscovery(kube, istio, opts, mesh, log)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Options{
		Discovery:             disc,
		Generate:              generate,
		GenerateEndpoints:     generateEndpoints,
		TrustDomain:           trustDomain(mesh),
		DebounceAfter:         opts.DebounceAfter,
		DebounceMax:           opts.DebounceMax,
		PlaintextNodeIdentity: opts.PlaintextNodeIdentity,
		Registry:              reg,
		Log:                   log.With("component", "xds"),
	})
	if err != nil {
		return err
	}
	disc.subscribe(srv.OnChange)

	caServer, err := ca.NewServer(&ca.Signer{Root: root, TrustDomain: trustDomain(mesh)},
		&ca.TokenAuthenticator{Client: kube, Audience: ca.DefaultAudience}, reg, log.With("component", "ca"))
	if err != nil {
		return err
	}
	publisher := ca.NewRootPublisher(kube, root.RootPEM(), opts.RootResync, log.With("component", "root-publisher"))

	dns, ips := serviceNames(opts.Namespace, opts.Revision, opts.DomainSuffix, opts.ExtraSANs)
	cert := &servingCert{root: root, dns: dns, ips: ips, ttl: ca.ServingCertTTL}
	if _, err := cert.get(time.Now()); err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}

	// Bind every port first so that a taken port fails the start at once.
	var lis listeners
	defer lis.closeAll()
	grpcLis, err := lis.listen(opts.GRPCAddr)
	if err != nil {
		return err
	}
	var plainLis net.Listener
	if opts.PlaintextAddr != "" {
		if plainLis, err = lis.listen(opts.PlaintextAddr); err != nil {
			return err
		}
	}
	httpLis, err := lis.listen(opts.HTTPAddr)
	if err != nil {
		return err
	}
	monLis, err := lis.listen(opts.MonitoringAddr)
	if err != nil {
		return err
	}
	hookLis, err := lis.listen(opts.WebhookAddr)
	if err != nil {
		return err
	}
	addrs := Addresses{GRPC: grpcLis.Addr().String(), HTTP: httpLis.Addr().String(),
		Monitoring: monLis.Addr().String(), Webhook: hookLis.Addr().String()}
	if plainLis != nil {
		addrs.Plaintext = plainLis.Addr().String()
	}

	// Streams end with ctx through the xDS server's own context; the gRPC
	// servers are stopped below.
	xdsCtx, cancelXDS := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelXDS()
	grpcOpts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	tlsServer := grpc.NewServer(append(grpcOpts, grpc.Creds(credentials.NewTLS(cert.serverTLS())))...)
	srv.Register(xdsCtx, tlsServer)
	securitypb.RegisterIstioCertificateServiceServer(tlsServer, caServer)
	grpcServers := []*grpc.Server{tlsServer}
	if plainLis != nil {
		plain := grpc.NewServer(grpcOpts...)
		srv.Register(xdsCtx, plain)
		securitypb.RegisterIstioCertificateServiceServer(plain, caServer)
		grpcServers = append(grpcServers, plain)
	}

	var ready atomic.Bool
	readyMux := http.NewServeMux()
	readyMux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	monMux := http.NewServeMux()
	monMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	monMux.Handle("/debug/", srv.DebugHandler())
	monMux.HandleFunc("/debug/pprof/", pprof.Index)
	monMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	monMux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	monMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	monMux.Handle("GET /ready", readyMux)
	hookMux := http.NewServeMux()
	webhook := opts.Webhook
	if webhook == nil {
		if webhook, err = defaultWebhook(log, reg); err != nil {
			return err
		}
	}
	hookMux.Handle("/validate", webhook)
	httpServers := []*http.Server{
		{Handler: readyMux, ReadHeaderTimeout: 10 * time.Second},
		{Handler: monMux, ReadHeaderTimeout: 10 * time.Second},
		{Handler: hookMux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: cert.serverTLS()},
	}
	httpServers[2].TLSConfig.ClientAuth = 0
	httpServers[2].TLSConfig.NextProtos = []string{"h2", "http/1.1"}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	bg := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	bg("discovery", func() error { return disc.Run(runCtx) })
	bg("root publisher", func() error { return publisher.Run(runCtx) })
	bg("xds pushes", func() error { return srv.Run(runCtx) })
	if opts.ValidatingWebhookConfig != "" {
		bg("webhook caBundle", func() error {
			return keepCABundle(runCtx, kube, opts.ValidatingWebhookConfig, root.RootPEM(), log)
		})
	}
	if opts.MeshConfigPath != "" {
		bg("mesh config watch", func() error {
			watchMesh(runCtx, opts.MeshConfigPath, log, func(m *meshMsg) {
				disc.setMesh(m)
				srv.OnChange(server.Change{})
			})
			return nil
		})
	}
	bg("ready server", func() error { return httpServers[0].Serve(httpLis) })
	bg("monitoring server", func() error { return httpServers[1].Serve(monLis) })
	bg("webhook server", func() error { return httpServers[2].ServeTLS(hookLis, "", "") })
	lis.release() // the servers own them now

	// xDS and CSR are served once discovery synced: a proxy never gets a
	// configuration built from a partial view of the cluster.
	synced := waitSynced(runCtx, disc.hasSynced)
	if synced {
		bg("grpc server", func() error { return tlsServer.Serve(grpcLis) })
		if plainLis != nil {
			bg("plaintext grpc server", func() error { return grpcServers[1].Serve(plainLis) })
		}
		ready.Store(true)
		log.Info("control plane ready", "grpc", addrs.GRPC, "http", addrs.HTTP, "monitoring", addrs.Monitoring, "webhook", addrs.Webhook, "plaintext", addrs.Plaintext)
		if opts.AddressesFile != "" {
			if err := writeJSON(opts.AddressesFile, addrs); err != nil {
				errs <- err
			}
		}
		if opts.OnListening != nil {
			opts.OnListening(addrs)
		}
	} else {
		_ = grpcLis.Close()
		if plainLis != nil {
			_ = plainLis.Close()
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
		log.Error("control plane failed", "err", runErr)
	}
	ready.Store(false)
	log.Info("shutting down")
	stopRun()
	shutdown(grpcServers, httpServers, cancelXDS, opts.ShutdownTimeout)
	wg.Wait()
	close(errs)
	for err := range errs {
		if runErr == nil {
			runErr = err
		}
	}
	return runErr
}

// shutdown stops the gRPC servers gracefully within timeout (then hard),
// and the HTTP servers.
func shutdown(grpcServers []*grpc.Server, httpServers []*http.Server, cancelXDS func(), timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, gs := range grpcServers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { gs.GracefulStop(); close(done) }()
			// ADS streams never end by themselves: ending the xDS
			// server's context closes them, after GracefulStop stopped
			// accepting new ones.
			cancelXDS()
			select {
			case <-done:
			case <-ctx.Done():
				gs.Stop()
			}
		}()
	}
	for _, hs := range httpServers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
			}
		}()
	}
	wg.Wait()
}

func waitSynced(ctx context.Context, synced func() bool) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !synced() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// listeners closes what was bound if Run fails before serving.
type listeners struct{ l []net.Listener }

func (ls *listeners) listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	ls.l = append(ls.l, l)
	return l, nil
}

func (ls *listeners) release() { ls.l = nil }

func (ls *listeners) closeAll() {
	for _, l := range ls.l {
		_ = l.Close()
	}
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
