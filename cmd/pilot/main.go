// Command pilot is the Mizzen control plane:
//
//	pilot discovery --meshConfig=/etc/istio/config/mesh --revision=<rev>
//
// It serves xDS and the certificate authority on 15012 (TLS), /ready on
// 8080, /metrics and /debug on 15014 and the validating webhook on 15017.
// See internal/pilot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/pilot"
	"github.com/mizzen-mesh/mizzen/internal/validation"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pilot:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "discovery" {
		return errors.New("usage: pilot discovery [flags]")
	}
	fs := flag.NewFlagSet("pilot discovery", flag.ContinueOnError)
	var o pilot.Options
	var extraSANs, logLevel string
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster configuration")
	fs.StringVar(&o.MeshConfigPath, "meshConfig", "/etc/istio/config/mesh", "mesh config file (watched)")
	fs.StringVar(&o.Revision, "revision", os.Getenv("REVISION"), "control plane revision (env REVISION)")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "control plane namespace (env POD_NAMESPACE)")
	fs.StringVar(&o.DomainSuffix, "domain", "cluster.local", "cluster DNS domain")
	fs.StringVar(&o.CACertsDir, "cacerts", "/etc/cacerts", "directory of a plug-in CA (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)")
	fs.StringVar(&extraSANs, "tls-extra-sans", "", "comma-separated extra DNS names or IPs for the serving certificate")
	fs.StringVar(&o.GRPCAddr, "grpcAddr", ":15012", "xDS and CA over TLS")
	fs.StringVar(&o.PlaintextAddr, "plaintextAddr", "", "plaintext xDS and CA (e.g. :15010); off when empty")
	fs.BoolVar(&o.PlaintextNodeIdentity, "plaintext-node-identity", false, "on the plaintext port, trust the identity in the node metadata (local debugging only)")
	fs.StringVar(&o.HTTPAddr, "httpAddr", ":8080", "/ready")
	fs.StringVar(&o.MonitoringAddr, "monitoringAddr", ":15014", "/metrics and /debug")
	fs.StringVar(&o.WebhookAddr, "webhookAddr", ":15017", "validating webhook (TLS)")
	fs.DurationVar(&o.DebounceAfter, "debounce-after", 100*time.Millisecond, "quiet time after a change before pushing")
	fs.DurationVar(&o.DebounceMax, "debounce-max", 1000*time.Millisecond, "longest a push waits under continuous changes")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 10*1000*time.Millisecond, "bound of the graceful stop")
	fs.StringVar(&o.ValidatingWebhookConfig, "validating-webhook-config", "", "ValidatingWebhookConfiguration whose caBundle is kept set to the mesh root (default: the controlplane chart's istio-validator{-rev}-<namespace>; - for none)")
	fs.StringVar(&o.AddressesFile, "addresses-file", "", "write the bound addresses as JSON to this file once ready")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch o.ValidatingWebhookConfig {
	case "":
		o.ValidatingWebhookConfig = validation.WebhookConfigName(o.Revision, o.Namespace)
	case "-":
		o.ValidatingWebhookConfig = ""
	}
	if extraSANs != "" {
		o.ExtraSANs = strings.Split(extraSANs, ",")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	o.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	setMemoryLimit(o.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return pilot.Run(ctx, o)
}
