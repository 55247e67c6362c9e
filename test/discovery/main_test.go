// Package discovery tests the control plane's discovery
// (internal/pilot/discovery) against a real API server: Deployments on kwok
// nodes whose EndpointSlices the real kube-controller-manager writes, Istio
// objects applied in every served version of the CRDs in charts/base/crds,
// gateway credentials from Secrets, and InvalidConfig Events.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

const (
	meshNamespace = "istio-system"
	waitTimeout   = 60 * time.Second
)

var (
	cs   kubernetes.Interface
	ist  istioclient.Interface
	ctrl *discovery.Controller
	rec  = &recorder{}
)

func TestMain(m *testing.M) {
	root, err := cluster.RepoRoot()
	if err != nil {
		panic(err)
	}
	os.Exit(cluster.RunTests(m, "discovery tests", cluster.Options{
		Nodes:             2,
		CRDDirectoryPaths: []string{filepath.Join(root, "charts", "base", "crds")},
	}, startDiscovery))
}

// startDiscovery runs one Controller for every test, as the control plane
// does, until ctx ends.
func startDiscovery(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	var err error
	if cs, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	if ist, err = istioclient.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNamespace}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	// Discovery runs as the control plane's ServiceAccount with the
	// ClusterRole the controlplane chart gives it, and nothing else: the
	// tests prove that role is enough.
	cfg, err := controlPlaneIdentity(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("the control plane's identity: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	istio, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctrl, err = discovery.New(discovery.Options{Kube: kube, Istio: istio, Namespace: meshNamespace, Log: log})
	if err != nil {
		return nil, err
	}
	ctrl.Subscribe(rec.record)
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	deadline := time.Now().Add(waitTimeout)
	for !ctrl.HasSynced() {
		if time.Now().After(deadline) {
			return nil, errors.New("discovery did not sync: does the chart's ClusterRole let it list and watch every kind?")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() error { return <-done }, nil
}

// controlPlaneIdentity creates the ClusterRole and binding the controlplane
// chart renders (minimal profile) and returns a client
// configuration authenticating as the ServiceAccount they bind.
func controlPlaneIdentity(ctx context.Context, c *cluster.Cluster) (*rest.Config, error) {
	res, err := render.RenderUserSpec("mesh", &v1alpha1.MeshInstallSpec{Profile: "minimal"},
		render.Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"})
	if err != nil {
		return nil, err
	}
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	for _, o := range res.Objects {
		if o.GetLabels()["app"] != "istiod" {
			continue
		}
		switch o.GetKind() {
		case "ClusterRole":
			role = &rbacv1.ClusterRole{}
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role)
		case "ClusterRoleBinding":
			binding = &rbacv1.ClusterRoleBinding{}
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, binding)
		}
		if err != nil {
			return nil, err
		}
	}
	if role == nil || binding == nil || len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "ServiceAccount" {
		return nil, errors.New("the minimal profile renders no ClusterRole bound to the control plane's ServiceAccount")
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	sa := binding.Subjects[0]
	user, err := c.Env.ControlPlane.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace},
	}, nil)
	if err != nil {
		return nil, err
	}
	return user.Config(), nil
}

// recorder keeps every Change the controller delivered.
type recorder struct {
	mu      sync.Mutex
	changes []discovery.Change
}

func (r *recorder) record(ch discovery.Change) {
	r.mu.Lock()
	r.changes = append(r.changes, ch)
	r.mu.Unlock()
}

// find returns the first change that matches.
func (r *recorder) find(match func(discovery.Change) bool) (discovery.Change, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.IndexFunc(r.changes, match)
	if i < 0 {
		return discovery.Change{}, false
	}
	return r.changes[i], true
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
	ns, err := cs.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: map[string]string{"test": prefix}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
