// Package injector tests the sidecar injector through a real API server:
// the injector runs in this process (inject.Run, as cmd/injector runs it)
// with the identity and RBAC the injector chart gives it, manages its own
// serving certificate, and is registered with the API server through the
// chart-rendered MutatingWebhookConfiguration, its clientConfig pointed at
// 127.0.0.1. Every test creates pods the way a user does and checks the
// Pod objects the API server stores.
package injector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/inject"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

const (
	meshNamespace = "istio-system"
	// reloadInterval is how often the injectors under test re-read their
	// config, certificate and caBundle.
	reloadInterval = 200 * time.Millisecond
	waitTimeout    = 30 * time.Second
)

// injector is one running injector (one revision).
type injector struct {
	revision   string
	configDir  string
	webhookURL string
	monitorURL string
	mwcName    string
	secretName string
	// kubeconfig holds the identity of the injector's ServiceAccount.
	kubeconfig string
	opts       inject.Options
}

var (
	k        client.Client
	defaultI *injector // revision "default": nativeSidecar auto (the cluster supports it)
	canaryI  *injector // revision "canary": nativeSidecar false
	// binaryI is revision "bin", set up but not started: TestBinary runs
	// it as the cmd/injector binary.
	binaryI *injector
)

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, "injector tests", cluster.Options{Nodes: 1}, startInjectors))
}

// startInjectors runs the default and canary revisions' injectors in this
// process until ctx ends, and prepares the one TestBinary runs.
func startInjectors(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	var err error
	if k, err = c.Client(clientgoscheme.Scheme); err != nil {
		return nil, err
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": meshNamespace}}}
	if err := k.Create(ctx, ns); err != nil {
		return nil, err
	}
	done := make(chan error, 2)
	started := 0
	for _, s := range []struct {
		into *(*injector)
		spec string
	}{
		{&defaultI, "profile: minimal"},
		{&canaryI, "profile: minimal\nrevision: canary\nvalues:\n  injector:\n    sidecar:\n      nativeSidecar: false\n"},
	} {
		i, opts, err := setUp(ctx, c, s.spec)
		if err != nil {
			return nil, fmt.Errorf("an injector: %w", err)
		}
		*s.into = i
		started++
		go func() { done <- inject.Run(ctx, opts) }()
	}
	if binaryI, _, err = setUp(ctx, c, "profile: minimal\nrevision: bin\n"); err != nil {
		return nil, fmt.Errorf("the binary's injector: %w", err)
	}
	for _, i := range []*injector{defaultI, canaryI} {
		if err := i.waitReady(ctx); err != nil {
			return nil, err
		}
	}
	return func() error {
		var errs []error
		for ; started > 0; started-- {
			if err := <-done; err != nil {
				errs = append(errs, fmt.Errorf("injector: %w", err))
			}
		}
		for _, i := range []*injector{defaultI, canaryI, binaryI} {
			_ = os.RemoveAll(filepath.Dir(i.configDir))
		}
		return errors.Join(errs...)
	}, nil
}

// renderInjector renders a MeshInstall spec with the operator's renderer
// and returns the injector chart's objects.
func renderInjector(spec string) ([]*unstructured.Unstructured, error) {
	user := &v1alpha1.MeshInstallSpec{}
	if err := yaml.UnmarshalStrict([]byte(spec), user); err != nil {
		return nil, err
	}
	res, err := render.RenderUserSpec("mesh", user, render.Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"})
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, o := range res.Objects {
		if o.GetLabels()["app"] == "sidecar-injector" {
			out = append(out, o.DeepCopy())
		}
	}
	return out, nil
}

// setUp applies what the chart renders for one revision (but the
// Deployment and Service: the injector runs in this process), writes its
// ConfigMap into a directory as the kubelet would mount it, and returns the
// injector's options, with the identity of its ServiceAccount.
func setUp(ctx context.Context, c *cluster.Cluster, spec string) (*injector, inject.Options, error) {
	objs, err := renderInjector(spec)
	if err != nil {
		return nil, inject.Options{}, err
	}
	port, err := freePort()
	if err != nil {
		return nil, inject.Options{}, err
	}
	monPort, err := freePort()
	if err != nil {
		return nil, inject.Options{}, err
	}
	// <tmp>/inject holds the ConfigMap's files, <tmp>/kubeconfig the
	// injector's identity.
	tmp, err := os.MkdirTemp("", "mizzen-injector-")
	if err != nil {
		return nil, inject.Options{}, err
	}
	dir := filepath.Join(tmp, "inject")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, inject.Options{}, err
	}
	i := &injector{
		configDir:  dir,
		webhookURL: "https://127.0.0.1:" + strconv.Itoa(port) + "/inject",
		monitorURL: "http://127.0.0.1:" + strconv.Itoa(monPort),
	}
	var service, sa string
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget":
			if o.GetKind() == "Service" {
				service = o.GetName()
			}
			continue
		case "ServiceAccount":
			sa = o.GetName()
		case "ConfigMap":
			for _, key := range []string{inject.ConfigFile, inject.ValuesFile} {
				v, _, _ := unstructured.NestedString(o.Object, "data", key)
				if err := os.WriteFile(filepath.Join(dir, key), []byte(v), 0o644); err != nil {
					return nil, inject.Options{}, err
				}
			}
		case "MutatingWebhookConfiguration":
			i.mwcName = o.GetName()
			webhooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
			for _, w := range webhooks {
				w.(map[string]any)["clientConfig"] = map[string]any{"url": i.webhookURL}
			}
			if err := unstructured.SetNestedSlice(o.Object, webhooks, "webhooks"); err != nil {
				return nil, inject.Options{}, err
			}
		}
		if err := k.Create(ctx, o); err != nil {
			return nil, inject.Options{}, fmt.Errorf("creating %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	i.secretName = service + "-tls"
	user, err := c.Env.ControlPlane.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + meshNamespace + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + meshNamespace},
	}, nil)
	if err != nil {
		return nil, inject.Options{}, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, inject.Options{}, err
	}
	i.kubeconfig = filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(i.kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, inject.Options{}, err
	}
	rev, _, _ := unstructured.NestedString(objs[0].Object, "metadata", "labels", "istio.io/rev")
	i.revision = rev
	i.opts = inject.Options{
		Port:            port,
		MonitoringPort:  monPort,
		BindAddress:     "127.0.0.1",
		InjectConfigDir: dir,
		WebhookConfig:   i.mwcName,
		Service:         service,
		Namespace:       meshNamespace,
		Revision:        rev,
		ExtraSANs:       []string{"127.0.0.1"},
		ReloadInterval:  reloadInterval,
		RestConfig:      rest.CopyConfig(user.Config()),
		Registry:        prometheus.NewRegistry(),
	}
	return i, i.opts, nil
}

// waitReady waits for /ready and for the caBundle in every webhook.
func (i *injector) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	var last string
	for {
		last = i.readyProblem(ctx)
		if last == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("injector %s not ready: %s", i.revision, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (i *injector) readyProblem(ctx context.Context) string {
	resp, err := http.Get(i.monitorURL + "/ready")
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "/ready: " + resp.Status
	}
	mwc := &unstructured.Unstructured{}
	mwc.SetAPIVersion("admissionregistration.k8s.io/v1")
	mwc.SetKind("MutatingWebhookConfiguration")
	if err := k.Get(ctx, client.ObjectKey{Name: i.mwcName}, mwc); err != nil {
		return err.Error()
	}
	webhooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
	for _, w := range webhooks {
		if ca, _, _ := unstructured.NestedString(w.(map[string]any), "clientConfig", "caBundle"); ca == "" {
			return "no caBundle yet"
		}
	}
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
