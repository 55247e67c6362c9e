// Command injector is Mizzen's sidecar injector: the mutating admission
// webhook that adds the proxy to pods of mesh namespaces (see
// charts/README.md for how the injector chart starts it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/mizzen-mesh/mizzen/internal/inject"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "injector:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, kubeconfig, err := parseFlags(args)
	if err != nil {
		return err
	}
	if kubeconfig != "" {
		o.RestConfig, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		o.RestConfig, err = ctrl.GetConfig()
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return inject.Run(ctx, o)
}

// parseFlags reads the command line (the flags of charts/README.md and a
// few more) into Run's options and the kubeconfig path.
func parseFlags(args []string) (inject.Options, string, error) {
	fs := flag.NewFlagSet("injector", flag.ContinueOnError)
	o := inject.Options{Namespace: os.Getenv("POD_NAMESPACE")}
	var sans, kubeconfig string
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or in-cluster)")
	fs.IntVar(&o.Port, "port", 9443, "port of the webhook (/inject, TLS)")
	fs.IntVar(&o.MonitoringPort, "monitoring-port", 15014, "port of /ready and /metrics")
	fs.StringVar(&o.BindAddress, "bind-address", "", "address to listen on (default: every interface)")
	fs.StringVar(&o.InjectConfigDir, "inject-config", "/etc/istio/inject", "directory holding the injection ConfigMap's config and values files")
	fs.StringVar(&o.WebhookConfig, "webhook-config", "", "MutatingWebhookConfiguration whose caBundle the injector keeps")
	fs.StringVar(&o.Service, "service", "istio-sidecar-injector", "the injector's Service (certificate host and Secret <service>-tls)")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "mesh namespace (default $POD_NAMESPACE)")
	fs.StringVar(&o.Revision, "revision", "default", "control plane revision")
	fs.StringVar(&o.CertDir, "tls-cert-dir", "", "take tls.crt, tls.key and ca.crt from this directory (e.g. cert-manager) instead of managing a Secret")
	fs.StringVar(&sans, "tls-extra-sans", "", "comma-separated extra host names or IPs of the generated certificate")
	fs.DurationVar(&o.ReloadInterval, "reload-interval", 0, "how often config, certificate and caBundle are checked (default 5s)")
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	if fs.NArg() > 0 {
		return o, "", fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if sans != "" {
		o.ExtraSANs = strings.Split(sans, ",")
	}
	if o.Namespace == "" {
		return o, "", errors.New("the mesh namespace is unknown: set POD_NAMESPACE or --namespace")
	}
	return o, kubeconfig, nil
}
