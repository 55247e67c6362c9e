// Package discovery tests the control plane's discovery
// (internal/pilot/discovery) against a real API server: Deployments on kwok
// nodes whose EndpointSlices the real kube-controller-manager writes, Istio
// objects applied in every served version of the CRDs in charts/base/crds,
// gateway credentials from Secrets, and InvalidConfig Events.
package discovery

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
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
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctrl, err = discovery.New(discovery.Options{Kube: cs, Istio: ist, Namespace: meshNamespace, Log: log})
	if err != nil {
		return nil, err
	}
	ctrl.Subscribe(rec.record)
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	deadline := time.Now().Add(waitTimeout)
	for !ctrl.HasSynced() {
		if time.Now().After(deadline) {
			return nil, context.DeadlineExceeded
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() error { return <-done }, nil
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
