// Package validation tests Istio config validation (internal/validation)
// through a real API server with the Istio CRDs of charts/base installed:
// the webhook handler is served over TLS on 127.0.0.1 by this process, as
// istiod serves it on port 15017, and is registered through the
// ValidatingWebhookConfiguration that the control plane chart renders, its
// clientConfig pointed at that local URL. KeepCABundle runs with the
// identity and RBAC the chart gives istiod. Tests create Istio objects the
// way a user does and check what the API server answers.
package validation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/internal/validation"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

const (
	meshNamespace = "istio-system"
	waitTimeout   = 30 * time.Second
)

var (
	k  client.Client
	cs kubernetes.Interface
	// adminConfig is the cluster's admin client config.
	adminConfig *rest.Config
	registry    = prometheus.NewRegistry()
	// vwcName is the chart's ValidatingWebhookConfiguration.
	vwcName string
	// rendered is that configuration as the chart renders it (with the
	// test's URL in place of the Service).
	rendered *unstructured.Unstructured
	// caPEM is the caBundle KeepCABundle maintains.
	caPEM []byte
)

func TestMain(m *testing.M) {
	root, err := cluster.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(cluster.RunTests(m, "validation tests", cluster.Options{
		Nodes:             1,
		CRDDirectoryPaths: []string{filepath.Join(root, "charts", "base", "crds")},
	}, start))
}

// start serves the webhook on loopback, registers it with the chart's
// configuration and keeps its caBundle as istiod would, until ctx ends.
func start(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	var err error
	if k, err = c.Client(clientgoscheme.Scheme); err != nil {
		return nil, err
	}
	if cs, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	adminConfig = rest.CopyConfig(c.Config)
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": meshNamespace}}}
	if err := k.Create(ctx, ns); err != nil {
		return nil, err
	}

	// The serving certificate, from a mesh root, for 127.0.0.1.
	now := time.Now()
	certPEM, keyPEM, err := ca.NewSelfSignedRoot(now)
	if err != nil {
		return nil, err
	}
	root, err := ca.ParseRoot(certPEM, keyPEM, nil, nil, now)
	if err != nil {
		return nil, err
	}
	caPEM = root.RootPEM()
	cert, err := root.IssueServingCert([]string{"istiod." + meshNamespace + ".svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0, now)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := validation.NewHandler(log, registry)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/validate", h)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		// The API server may try before KeepCABundle wrote the caBundle.
		ErrorLog: stdlog.New(io.Discard, "", 0)}
	go func() { _ = srv.ServeTLS(lis, "", "") }()
	url := "https://" + lis.Addr().String() + "/validate"

	istiodCfg, err := applyChart(ctx, c, url)
	if err != nil {
		return nil, err
	}
	istiodCS, err := kubernetes.NewForConfig(istiodCfg)
	if err != nil {
		return nil, err
	}
	keepDone := make(chan error, 1)
	go func() { keepDone <- validation.KeepCABundle(ctx, istiodCS, vwcName, caPEM, log) }()
	if err := waitEnforced(ctx); err != nil {
		return nil, err
	}
	return func() error {
		_ = srv.Close()
		return <-keepDone
	}, nil
}

// applyChart creates what the control plane chart renders for istiod's
// identity (ServiceAccount, ClusterRole, ClusterRoleBinding) and its
// ValidatingWebhookConfiguration, with clientConfig pointed at url, and
// returns a client config that authenticates as istiod's ServiceAccount.
func applyChart(ctx context.Context, c *cluster.Cluster, url string) (*rest.Config, error) {
	objs, err := renderControlPlane("profile: minimal\n")
	if err != nil {
		return nil, err
	}
	var sa string
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount":
			sa = o.GetName()
		case "ClusterRole", "ClusterRoleBinding":
		case "ValidatingWebhookConfiguration":
			vwcName = o.GetName()
			if err := pointAt(o, url); err != nil {
				return nil, err
			}
			rendered = o.DeepCopy()
		default:
			continue
		}
		if err := k.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("creating %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	if sa == "" || vwcName == "" {
		return nil, errors.New("the chart rendered no istiod ServiceAccount or no ValidatingWebhookConfiguration")
	}
	user, err := c.Env.ControlPlane.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + meshNamespace + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + meshNamespace},
	}, nil)
	if err != nil {
		return nil, err
	}
	return rest.CopyConfig(user.Config()), nil
}

// renderControlPlane renders a MeshInstall spec with the operator's
// renderer and returns the control plane chart's objects.
func renderControlPlane(spec string) ([]*unstructured.Unstructured, error) {
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
		if o.GetLabels()["app"] == "istiod" {
			out = append(out, o.DeepCopy())
		}
	}
	return out, nil
}

// pointAt replaces each webhook's Service with url, keeping everything
// else the chart rendered.
func pointAt(o *unstructured.Unstructured, url string) error {
	webhooks, _, err := unstructured.NestedSlice(o.Object, "webhooks")
	if err != nil {
		return err
	}
	for _, w := range webhooks {
		w.(map[string]any)["clientConfig"] = map[string]any{"url": url}
	}
	return unstructured.SetNestedSlice(o.Object, webhooks, "webhooks")
}

// waitEnforced waits until the API server calls the webhook: a dry-run
// create of an invalid VirtualService is refused by it.
func waitEnforced(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	for {
		o := mustObject(weights90)
		o.SetNamespace("default")
		err := k.Create(ctx, o, client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "denied the request") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the webhook is not enforced: last answer %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

const weights90 = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 40
`

func mustObject(doc string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &o.Object); err != nil {
		panic(err)
	}
	return o
}

// getVWC reads the ValidatingWebhookConfiguration.
func getVWC(ctx context.Context) (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	return cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, vwcName, metav1.GetOptions{})
}

// eventually retries f until it succeeds or waitTimeout passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createNamespace creates a namespace with a generated name.
func createNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"generateName": prefix + "-"}}}
	if err := k.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.GetName()
}
