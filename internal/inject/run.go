package inject

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// Options configure Run. Zero durations take the defaults shown.
type Options struct {
	// Port serves the webhook (/inject, TLS).
	Port int
	// MonitoringPort serves /ready and /metrics (plain HTTP).
	MonitoringPort int
	// BindAddress is the address both listen on; "" means every interface.
	BindAddress string
	// InjectConfigDir holds the ConfigMap's "config" and "values" files.
	InjectConfigDir string
	// WebhookConfig names the MutatingWebhookConfiguration whose caBundle
	// the injector keeps; "" leaves caBundles alone.
	WebhookConfig string
	// Service is the injector's Service: the serving certificate is for
	// <Service>.<Namespace>.svc and the Secret is <Service>-tls.
	Service string
	// Namespace is the mesh namespace the injector runs in.
	Namespace string
	// Revision is the control plane revision ("default" or a name).
	Revision string
	// CertDir, when set, holds tls.crt, tls.key and optionally ca.crt
	// (cert-manager); they are reloaded on change and no Secret is managed.
	CertDir string
	// ExtraSANs are more host names or IPs for a generated certificate.
	ExtraSANs []string
	// CertValidity is the generated serving certificate's lifetime (1 year);
	// it is renewed when less than a third of it is left.
	CertValidity time.Duration
	// ReloadInterval is how often the config files, the certificate and the
	// caBundle are checked (5s).
	ReloadInterval time.Duration
	// RestConfig reaches the API server.
	RestConfig *rest.Config
	// Registry receives the metrics; nil means a new one with Go and process
	// collectors.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds the graceful shutdown (15s).
	ShutdownTimeout time.Duration
}

// Run serves the webhook until ctx is done, then shuts down gracefully.
func Run(ctx context.Context, o Options) error {
	if o.InjectConfigDir == "" || o.Namespace == "" || o.Service == "" && o.CertDir == "" {
		return errors.New("inject-config, the namespace (POD_NAMESPACE) and service (or a certificate directory) are required")
	}
	if o.RestConfig == nil {
		return errors.New("no API server configuration")
	}
	if o.CertValidity <= 0 {
		o.CertValidity = 365 * 24 * time.Hour
	}
	if o.ReloadInterval <= 0 {
		o.ReloadInterval = 5 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 15 * time.Second
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cs, err := kubernetes.NewForConfig(o.RestConfig)
	if err != nil {
		return err
	}

	r := &runner{o: o, cs: cs, handler: NewHandler(nil, NewMetrics(reg))}

	mon := http.NewServeMux()
	mon.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if msg := r.notReady(); msg != "" {
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mon.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	wh := http.NewServeMux()
	wh.Handle("/inject", r.handler)
	wh.Handle("/inject/", r.handler)

	monLn, err := net.Listen("tcp", net.JoinHostPort(o.BindAddress, strconv.Itoa(o.MonitoringPort)))
	if err != nil {
		return err
	}
	whLn, err := net.Listen("tcp", net.JoinHostPort(o.BindAddress, strconv.Itoa(o.Port)))
	if err != nil {
		monLn.Close()
		return err
	}
	monSrv := &http.Server{Handler: mon, ReadHeaderTimeout: 10 * time.Second}
	whSrv := &http.Server{
		Handler:           wh,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := r.cert.Load()
			if c == nil {
				return nil, errors.New("no serving certificate yet")
			}
			return c, nil
		}},
	}

	errs := make(chan error, 3)
	go func() { errs <- serve(monSrv.Serve(monLn)) }()
	go func() { errs <- serve(whSrv.ServeTLS(whLn, "", "")) }()
	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.loop(loopCtx) }()
	klog.InfoS("sidecar injector started", "webhook", whLn.Addr().String(), "monitoring", monLn.Addr().String(),
		"revision", o.Revision)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	stopLoop()
	wg.Wait()
	klog.InfoS("sidecar injector shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	if err := whSrv.Shutdown(sctx); err != nil && runErr == nil {
		runErr = err
	}
	if err := monSrv.Shutdown(sctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

func serve(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type runner struct {
	o       Options
	cs      kubernetes.Interface
	handler *Handler
	native  bool

	cert       atomic.Pointer[tls.Certificate]
	certPEM    []byte
	caPEM      []byte
	caSynced   atomic.Bool
	cfgPolicy  []byte
	cfgValues  []byte
	lastErrMsg atomic.Value // string
}

func (r *runner) notReady() string {
	switch {
	case r.handler.Config() == nil:
		return "injection config not loaded: " + r.lastErr()
	case r.cert.Load() == nil:
		return "no serving certificate: " + r.lastErr()
	}
	return ""
}

func (r *runner) lastErr() string {
	s, _ := r.lastErrMsg.Load().(string)
	return s
}

// loop keeps config, certificate and caBundle current.
func (r *runner) loop(ctx context.Context) {
	// Once: whether the cluster runs native sidecars decides how every
	// config is applied.
	r.native = nativeSidecarsSupported(ctx, r.cs)
	klog.InfoS("API server version read", "nativeSidecarsSupported", r.native)
	t := time.NewTicker(r.o.ReloadInterval)
	defer t.Stop()
	for {
		var errs []string
		if err := r.reloadConfig(); err != nil {
			errs = append(errs, err.Error())
		}
		if err := r.reloadCert(ctx); err != nil {
			errs = append(errs, err.Error())
		}
		if len(errs) > 0 {
			msg := strings.Join(errs, "; ")
			if msg != r.lastErr() {
				klog.ErrorS(errors.New(msg), "sidecar injector not fully configured; retrying")
			}
			r.lastErrMsg.Store(msg)
		} else {
			r.lastErrMsg.Store("")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reloadConfig reads the ConfigMap's files and, when they changed, swaps
// the handler's config. A bad new config keeps the old one.
func (r *runner) reloadConfig() error {
	policy, err := os.ReadFile(filepath.Join(r.o.InjectConfigDir, ConfigFile))
	if err != nil {
		return err
	}
	values, err := os.ReadFile(filepath.Join(r.o.InjectConfigDir, ValuesFile))
	if err != nil {
		return err
	}
	if r.handler.Config() != nil && bytes.Equal(policy, r.cfgPolicy) && bytes.Equal(values, r.cfgValues) {
		return nil
	}
	cfg, err := ParseConfig(policy, values)
	if err != nil {
		return err
	}
	cfg.MeshNamespace = r.o.Namespace
	cfg.NativeSidecarsSupported = r.native
	r.cfgPolicy, r.cfgValues = policy, values
	r.handler.SetConfig(cfg)
	klog.InfoS("injection config loaded", "dir", r.o.InjectConfigDir)
	return nil
}

// reloadCert ensures a valid serving certificate and the caBundle.
func (r *runner) reloadCert(ctx context.Context) error {
	var b *certBundle
	var err error
	if r.o.CertDir != "" {
		b, err = readCertDir(r.o.CertDir)
	} else {
		ns := r.o.Namespace
		hosts := []string{r.o.Service + "." + ns + ".svc", r.o.Service + "." + ns + ".svc.cluster.local", r.o.Service + "." + ns, r.o.Service}
		hosts = append(hosts, r.o.ExtraSANs...)
		b, err = ensureSecretCert(ctx, r.cs, ns, r.o.Service+"-tls", certSettings{
			hosts: hosts, validity: r.o.CertValidity, renewBefore: r.o.CertValidity / 3,
			caValidity: 10 * r.o.CertValidity,
		}, time.Now())
	}
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	if !bytes.Equal(b.cert, r.certPEM) {
		pair, err := tls.X509KeyPair(b.cert, b.key)
		if err != nil {
			return fmt.Errorf("serving certificate: %w", err)
		}
		r.cert.Store(&pair)
		r.certPEM = b.cert
		klog.InfoS("serving certificate loaded", "notAfter", pairNotAfter(&pair))
	}
	if !bytes.Equal(b.caCert, r.caPEM) {
		r.caPEM = b.caCert
		r.caSynced.Store(false)
	}
	if r.o.WebhookConfig == "" || len(r.caPEM) == 0 {
		return nil
	}
	// Checked every round: a recreated configuration gets its caBundle back.
	found, err := syncCABundle(ctx, r.cs, r.o.WebhookConfig, r.caPEM)
	if err != nil {
		return fmt.Errorf("writing the caBundle of %s: %w", r.o.WebhookConfig, err)
	}
	if found && !r.caSynced.Swap(true) {
		klog.InfoS("caBundle in place", "mutatingWebhookConfiguration", r.o.WebhookConfig)
	}
	return nil
}

func pairNotAfter(p *tls.Certificate) time.Time {
	if p.Leaf != nil {
		return p.Leaf.NotAfter
	}
	return time.Time{}
}

// nativeSidecarsSupported reads the API server's version once: native
// sidecars are on by default from Kubernetes 1.29.
func nativeSidecarsSupported(ctx context.Context, cs kubernetes.Interface) bool {
	var lastErr error
	for i := 0; i < 5; i++ {
		v, err := cs.Discovery().ServerVersion()
		if err == nil {
			major, _ := strconv.Atoi(strings.TrimRight(v.Major, "+"))
			minor, _ := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
			return major > 1 || major == 1 && minor >= 29
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
	klog.ErrorS(lastErr, "cannot read the API server version; proxies will be regular containers unless sidecar.nativeSidecar is true")
	return false
}
