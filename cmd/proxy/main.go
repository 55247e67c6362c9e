// Command proxy is Mizzen's data-plane proxy, started by the injected
// containers (see internal/inject) and by gateway Deployments:
//
//	proxy sidecar [--log-level=info] [flags]    the sidecar of an app pod
//	proxy router --gateway-name=<name> [flags]  an ingress or egress gateway
//	proxy init <capture flags> [--dry-run]      istio-init: program traffic capture
//	proxy wait [--timeout=60s]                  exit 0 once the proxy is ready
//
// sidecar and router read the injector's environment (POD_NAME,
// POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, DISCOVERY_ADDRESS,
// CA_ADDRESS, TRUST_DOMAIN, PROXY_CONFIG, ISTIO_META_*,
// ISTIO_KUBE_APP_PROBERS, GATEWAY_KIND); every path and address also has a
// flag, for tests on loopback.
//
// PROXY_CONFIG's concurrency is the number of processors running the
// proxy's Go code (GOMAXPROCS; 0: every CPU the container may use). Left
// unset, a sidecar runs on one processor and a gateway on all; an
// explicit GOMAXPROCS environment variable wins over both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
	"github.com/mizzen-mesh/mizzen/internal/proxy/capture"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient"
)

const usage = `usage: proxy <sidecar|router|init|wait> [flags]`

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "sidecar" || os.Args[1] == "router") {
		// ProxyConfig concurrency (sidecars default to one processor).
		if n := agent.Procs(config.Mode(os.Args[1]), os.Getenv("PROXY_CONFIG"), os.Getenv("GOMAXPROCS")); n > 0 {
			runtime.GOMAXPROCS(n)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "proxy:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "sidecar", "router":
		opts, err := parseAgentFlags(config.Mode(cmd), rest, os.Environ(), stderr)
		if err != nil {
			return err
		}
		return agent.Run(ctx, opts)
	case "init":
		c, err := capture.ParseArgs(rest, stderr)
		if err != nil {
			return err
		}
		if c.DryRun {
			_, err := io.WriteString(stdout, capture.Render(&c))
			return err
		}
		if err := capture.Install(&c); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "traffic capture installed")
		return nil
	case "wait":
		fs := flag.NewFlagSet("wait", flag.ContinueOnError)
		fs.SetOutput(stderr)
		timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
		url := fs.String("url", agent.DefaultReadyURL, "readiness URL to poll")
		interval := fs.Duration("interval", 200*time.Millisecond, "time between polls")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return agent.Wait(ctx, *url, *timeout, *interval)
	default:
		return fmt.Errorf("unknown command %q; %s", cmd, usage)
	}
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseAgentFlags reads the flags of sidecar and router.
func parseAgentFlags(mode config.Mode, args, env []string, stderr io.Writer) (agent.Options, error) {
	fs := flag.NewFlagSet(string(mode), flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := agent.Options{Mode: mode, Env: env}
	var metadata, labels multiFlag
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (Istio's scope:level lists use the default scope)")
	fs.StringVar(&o.GatewayName, "gateway-name", "", "router: the gateway's name (node metadata GATEWAY_NAME)")
	fs.StringVar(&o.DiscoveryAddress, "discovery-address", "", "control plane host:port (default $DISCOVERY_ADDRESS)")
	fs.StringVar(&o.CAAddress, "ca-address", "", "CA host:port (default $CA_ADDRESS, else the discovery address)")
	fs.StringVar(&o.ServerName, "server-name", "", "name verified in the control plane's and CA's certificates (default: the address's host)")
	fs.StringVar(&o.RootCertFile, "root-cert", "", "mesh root certificate (default /var/run/secrets/istio/root-cert.pem)")
	fs.StringVar(&o.TokenFile, "token-file", "", "ServiceAccount token (default /var/run/secrets/tokens/istio-token)")
	fs.StringVar(&o.LabelsFile, "labels-file", "", "pod labels, downward API format (default /etc/istio/pod/labels)")
	fs.StringVar(&o.AdminAddress, "admin-address", "", "admin server (default 127.0.0.1:15000; - disables)")
	fs.StringVar(&o.StatusAddress, "status-address", "", "status server with app probes (default :15020; - disables)")
	fs.StringVar(&o.HealthAddress, "health-address", "", "readiness server (default :15021; - disables)")
	fs.StringVar(&o.StatsAddress, "stats-address", "", "Prometheus server (default :15090; - disables)")
	fs.StringVar(&o.BindAddress, "bind-address", "", "address that listeners asking for 0.0.0.0 bind instead (default: as asked)")
	fs.Var(&metadata, "metadata", "node metadata KEY=VALUE (repeatable)")
	fs.Var(&labels, "labels", "pod label k=v, instead of the labels file (repeatable)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if mode == config.ModeRouter && o.GatewayName == "" {
		return o, errors.New("router needs --gateway-name")
	}
	var err error
	if o.Metadata, err = xdsclient.ParseKeyValues(metadata); err != nil {
		return o, fmt.Errorf("--metadata: %w", err)
	}
	if len(labels) > 0 {
		if o.Labels, err = xdsclient.ParseKeyValues(labels); err != nil {
			return o, fmt.Errorf("--labels: %w", err)
		}
	}
	level, err := parseLogLevel(*logLevel)
	if err != nil {
		return o, err
	}
	o.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	o.NewDataplane = newDataplane
	return o, nil
}

// parseLogLevel accepts a level, or Istio's "scope:level,..." list whose
// "default" (else first) entry is used.
func parseLogLevel(s string) (slog.Level, error) {
	lvl := s
	if strings.Contains(s, ":") {
		lvl = ""
		for _, part := range strings.Split(s, ",") {
			scope, l, _ := strings.Cut(part, ":")
			if lvl == "" || scope == "default" {
				lvl = l
			}
		}
	}
	switch strings.ToLower(strings.TrimSpace(lvl)) {
	case "debug", "trace":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "critical", "off":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level: unknown level %q", s)
}
