// Package agent runs a proxy (sidecar or gateway router): it obtains the
// workload certificate (internal/proxy/certs), connects to the control
// plane (internal/proxy/xdsclient), drives the data plane with what it
// receives, and serves the proxy's own ports:
//
//	15000 (127.0.0.1) admin: /config_dump, /stats, /ready, POST /quitquitquit
//	15020 status: /app-health/<container>/<livez|readyz|startupz> replaying the
//	      app's original HTTP probes ($ISTIO_KUBE_APP_PROBERS), /healthz/ready,
//	      /stats/prometheus (the proxy's metrics, then the app's from
//	      $ISTIO_PROMETHEUS_ANNOTATIONS: see merge.go)
//	15021 /healthz/ready: 200 once the certificate is held, the first
//	      configuration is applied and the data plane's listeners are up
//	15090 /stats/prometheus: the proxy's registry (the data plane registers
//	      Istio's standard metrics in it)
//
// On SIGTERM (ctx cancelled) it turns not ready, drains the data plane for
// at most the ProxyConfig's terminationDrainDuration (default 5s) and
// returns nil.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mizzen-mesh/mizzen/internal/proxy/certs"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient"
)

// Dataplane is what the agent drives (internal/proxy/dataplane).
type Dataplane interface {
	// Apply validates and installs snap atomically; on error nothing
	// changed (the xDS client NACKs with the error).
	Apply(snap *config.Snapshot) error
	// Ready reports whether the listeners of the first complete
	// configuration are bound.
	Ready() bool
	// Drain stops accepting and lets in-flight work finish until ctx ends.
	Drain(ctx context.Context) error
	// ConfigDump is the JSON of the active resources.
	ConfigDump() ([]byte, error)
	Close() error
}

// DataplaneOptions are given to the data plane's constructor.
type DataplaneOptions struct {
	Node     *config.Node
	Secrets  config.Secrets
	Log      *slog.Logger
	Registry *prometheus.Registry
	// BindAddress replaces the unspecified address (0.0.0.0) of the
	// listeners the proxy binds (Options.BindAddress).
	BindAddress string
}

// NewDataplaneFunc builds the data plane (cmd/proxy wires dataplane.New).
type NewDataplaneFunc func(DataplaneOptions) (Dataplane, error)

// Default addresses.
const (
	DefaultAdminAddress  = "127.0.0.1:15000"
	DefaultStatusAddress = ":15020"
	DefaultHealthAddress = ":15021"
	DefaultStatsAddress  = ":15090"
	DefaultLabelsFile    = "/etc/istio/pod/labels"
	DefaultDrainDuration = 5 * time.Second
)

// Options configure Run. Empty fields take the environment's values (the
// injector's env contract) and then the defaults.
type Options struct {
	Mode        config.Mode
	GatewayName string
	// Env is the environment (os.Environ()): POD_NAME, POD_NAMESPACE,
	// INSTANCE_IP, SERVICE_ACCOUNT, DISCOVERY_ADDRESS, CA_ADDRESS,
	// TRUST_DOMAIN, PROXY_CONFIG, ISTIO_META_*, ISTIO_KUBE_APP_PROBERS,
	// GATEWAY_KIND, REVISION.
	Env []string

	DiscoveryAddress string
	CAAddress        string
	// ServerName verifies the control plane and the CA (default: the
	// host of each address).
	ServerName   string
	RootCertFile string
	TokenFile    string
	LabelsFile   string
	Labels       map[string]string // override the labels file
	Metadata     map[string]string // node metadata overrides

	AdminAddress  string
	StatusAddress string
	HealthAddress string
	StatsAddress  string
	// BindAddress, when set, is the address listeners that ask for
	// 0.0.0.0 bind instead (a gateway on a loopback address in tests).
	BindAddress string

	NewDataplane NewDataplaneFunc
	Log          *slog.Logger
	// Registry is the proxy's metrics registry (default: a new one with
	// the Go and process collectors).
	Registry *prometheus.Registry
	// Ready is told the addresses actually bound (tests use port 0).
	Listening func(Addresses)
}

// Addresses are the bound addresses of the agent's servers.
type Addresses struct {
	Admin, Status, Health, Stats string
}

// ProxyConfig is the subset of Istio's ProxyConfig ($PROXY_CONFIG) the
// agent reads.
type ProxyConfig struct {
	DiscoveryAddress         string            `json:"discoveryAddress,omitempty"`
	TerminationDrainDuration string            `json:"terminationDrainDuration,omitempty"`
	ProxyMetadata            map[string]string `json:"proxyMetadata,omitempty"`
	// Concurrency is how many processors run the proxy's Go code
	// (GOMAXPROCS); 0 means every CPU the container may use. See Procs.
	Concurrency *int32 `json:"concurrency,omitempty"`
}

// Procs is the GOMAXPROCS a proxy runs with, 0 to leave the runtime's
// choice (every CPU of the container's limit): an explicit GOMAXPROCS
// wins, then ProxyConfig concurrency (0: all CPUs); unset, a sidecar uses
// one processor and a gateway all. A sidecar carries one workload's
// traffic, which one processor serves with less CPU per request than
// several: the runtime stops waking idle processors to look for work at
// every request (make bench-dataplane: 0.18 instead of 0.23 vCPU per 1000
// requests/s per sidecar, with lower latency).
func Procs(mode config.Mode, proxyConfig, gomaxprocs string) int {
	if gomaxprocs != "" {
		return 0
	}
	pc, _, err := ParseProxyConfig(proxyConfig)
	switch {
	case err == nil && pc.Concurrency != nil && *pc.Concurrency > 0:
		return int(*pc.Concurrency)
	case err == nil && pc.Concurrency != nil:
		return 0
	case mode == config.ModeSidecar:
		return 1
	}
	return 0
}

// ParseProxyConfig parses $PROXY_CONFIG and returns the drain duration.
func ParseProxyConfig(s string) (ProxyConfig, time.Duration, error) {
	var pc ProxyConfig
	if strings.TrimSpace(s) != "" {
		if err := json.Unmarshal([]byte(s), &pc); err != nil {
			return pc, 0, fmt.Errorf("PROXY_CONFIG: %w", err)
		}
	}
	drain := DefaultDrainDuration
	if pc.TerminationDrainDuration != "" {
		d, err := time.ParseDuration(pc.TerminationDrainDuration)
		if err != nil || d < 0 {
			return pc, 0, fmt.Errorf("PROXY_CONFIG terminationDrainDuration %q is not a duration", pc.TerminationDrainDuration)
		}
		drain = d
	}
	return pc, drain, nil
}

// Agent is a running proxy's control side; see Run.
type Agent struct {
	opts    Options
	env     map[string]string
	log     *slog.Logger
	node    *config.Node
	certs   *certs.Manager
	xds     *xdsclient.Client
	dp      Dataplane
	reg     *prometheus.Registry
	probers map[string]Prober
	podIP   string
	// appScrape is the app's metrics endpoint merged into the status
	// port's /stats/prometheus (nil: none).
	appScrape *AppScrape
	scrapes   *scrapeCounters
	drain     time.Duration
	draining  atomic.Bool
	quit      chan struct{}
	quitOnce  sync.Once
}

// Run runs the proxy until ctx ends, then drains and returns nil; it
// returns an error when it cannot start.
func Run(ctx context.Context, opts Options) error {
	a, err := newAgent(opts)
	if err != nil {
		return err
	}
	return a.run(ctx)
}

func newAgent(opts Options) (*Agent, error) {
	a := &Agent{opts: opts, env: map[string]string{}, quit: make(chan struct{})}
	for _, kv := range opts.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			a.env[k] = v
		}
	}
	a.log = opts.Log
	if a.log == nil {
		a.log = slog.Default()
	}
	if opts.NewDataplane == nil {
		return nil, errors.New("no data plane")
	}
	if opts.Mode == "" {
		opts.Mode = config.ModeSidecar
	}
	pc, drain, err := ParseProxyConfig(a.env["PROXY_CONFIG"])
	if err != nil {
		return nil, err
	}
	a.drain = drain
	def := func(p *string, vals ...string) {
		for _, v := range vals {
			if *p == "" {
				*p = v
			}
		}
	}
	def(&opts.DiscoveryAddress, a.env["DISCOVERY_ADDRESS"], pc.DiscoveryAddress, "istiod.istio-system.svc:15012")
	def(&opts.CAAddress, a.env["CA_ADDRESS"], opts.DiscoveryAddress)
	def(&opts.RootCertFile, certs.DefaultRootCertFile)
	def(&opts.TokenFile, certs.DefaultTokenFile)
	def(&opts.LabelsFile, DefaultLabelsFile)
	def(&opts.AdminAddress, DefaultAdminAddress)
	def(&opts.StatusAddress, DefaultStatusAddress)
	def(&opts.HealthAddress, DefaultHealthAddress)
	def(&opts.StatsAddress, DefaultStatsAddress)

	labels := map[string]string{}
	if data, err := os.ReadFile(opts.LabelsFile); err == nil {
		if labels, err = xdsclient.ParseLabels(string(data)); err != nil {
			return nil, fmt.Errorf("%s: %w", opts.LabelsFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	if kind := a.env["GATEWAY_KIND"]; opts.Mode == config.ModeRouter && kind != "" && labels["istio"] == "" {
		labels["istio"] = kind + "gateway"
	}
	a.node, err = xdsclient.NewNode(xdsclient.NodeInput{Mode: opts.Mode, Env: opts.Env, Labels: labels,
		Metadata: opts.Metadata, GatewayName: opts.GatewayName})
	if err != nil {
		return nil, err
	}
	if len(a.node.IPs) > 0 {
		a.podIP = a.node.IPs[0]
	}
	if a.probers, err = ParseProbers(a.env["ISTIO_KUBE_APP_PROBERS"]); err != nil {
		return nil, err
	}
	if a.appScrape, err = ParseAppScrape(a.env[EnvPrometheusAnnotations]); err != nil {
		return nil, err
	}
	a.reg = opts.Registry
	if a.reg == nil {
		a.reg = prometheus.NewRegistry()
		a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	a.scrapes = newScrapeCounters()
	if err := register(a.reg, a.scrapes.scrapes, a.scrapes.failures); err != nil {
		return nil, err
	}
	caServerName := opts.ServerName
	a.certs, err = certs.New(certs.Options{
		CAAddress: opts.CAAddress, ServerName: caServerName, RootCertFile: opts.RootCertFile, TokenFile: opts.TokenFile,
		TrustDomain: a.node.TrustDomain, Namespace: a.node.Namespace, ServiceAccount: a.node.ServiceAccount,
		Log: a.log.With("component", "certs"),
	})
	if err != nil {
		return nil, err
	}
	if err := register(a.reg, a.certs.Collectors()...); err != nil {
		return nil, err
	}
	a.opts = opts
	return a, nil
}

func register(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// Ready reports whether the proxy serves: the certificate is held and
// valid, the first configuration was applied, the data plane's listeners
// are up, and it is not draining.
func (a *Agent) Ready() error {
	switch {
	case a.draining.Load():
		return errors.New("draining")
	case !a.certs.HasValidCertificate():
		return errors.New("no valid workload certificate")
	case a.xds == nil || !isClosed(a.xds.Synced()):
		return errors.New("the first configuration has not been received")
	case !a.dp.Ready():
		return errors.New("the data plane's listeners are not up")
	}
	return nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (a *Agent) run(ctx context.Context) error {
	var err error
	a.dp, err = a.opts.NewDataplane(DataplaneOptions{Node: a.node, Secrets: a.certs, Log: a.log.With("component", "dataplane"), Registry: a.reg, BindAddress: a.opts.BindAddress})
	if err != nil {
		return fmt.Errorf("starting the data plane: %w", err)
	}
	a.xds, err = xdsclient.New(xdsclient.Options{Address: a.opts.DiscoveryAddress, ServerName: a.opts.ServerName,
		Node: a.node, Secrets: a.certs, Dataplane: a.dp, Log: a.log.With("component", "xds")})
	if err != nil {
		a.dp.Close()
		return err
	}
	if err := register(a.reg, a.xds.Collectors()...); err != nil {
		a.dp.Close()
		return err
	}
	servers, addrs, err := a.listen()
	if err != nil {
		a.dp.Close()
		return err
	}
	if a.opts.Listening != nil {
		a.opts.Listening(addrs)
	}
	a.log.Info("proxy starting", "node", a.node.ID, "discovery", a.opts.DiscoveryAddress, "ca", a.opts.CAAddress)

	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = a.certs.Run(runCtx) }()
	go func() {
		defer wg.Done()
		// The control plane requires the workload certificate.
		select {
		case <-a.certs.Ready():
		case <-runCtx.Done():
			return
		}
		_ = a.xds.Run(runCtx)
	}()

	select {
	case <-ctx.Done():
		a.log.Info("terminating: draining", "for", a.drain)
	case <-a.quit:
		a.log.Info("quitquitquit: draining", "for", a.drain)
	}
	a.draining.Store(true)
	dctx, cancel := context.WithTimeout(context.Background(), a.drain)
	if err := a.dp.Drain(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("drain", "err", err)
	}
	cancel()
	stop()
	wg.Wait()
	if err := a.dp.Close(); err != nil {
		a.log.Warn("closing the data plane", "err", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	a.log.Info("proxy stopped")
	return nil
}

// listen binds the agent's ports and serves them.
func (a *Agent) listen() ([]*http.Server, Addresses, error) {
	var servers []*http.Server
	var addrs Addresses
	bind := []struct {
		addr    string
		handler http.Handler
		out     *string
	}{
		{a.opts.AdminAddress, a.adminHandler(), &addrs.Admin},
		{a.opts.StatusAddress, a.statusHandler(), &addrs.Status},
		{a.opts.HealthAddress, a.healthHandler(), &addrs.Health},
		{a.opts.StatsAddress, a.statsHandler(), &addrs.Stats},
	}
	for _, b := range bind {
		if b.addr == "-" {
			continue // disabled
		}
		l, err := net.Listen("tcp", b.addr)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return nil, addrs, fmt.Errorf("listening on %s: %w", b.addr, err)
		}
		*b.out = l.Addr().String()
		s := &http.Server{Handler: b.handler, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { _ = s.Serve(l) }()
	}
	return servers, addrs, nil
}
