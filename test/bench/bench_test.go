// Package bench measures the operator on a real local control plane
// (hack/setup-kube.sh): how long a demo install takes, what a no-op reconcile
// costs, and the operator's memory. Run with `make bench`; it reports, it
// does not assert.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/controllers"
	"github.com/mizzen-mesh/mizzen/internal/operator"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/test/apicount"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

var (
	kube *cluster.Cluster
	k    client.Client
)

func TestMain(m *testing.M) {
	code := func() int {
		if !isBench() {
			return m.Run()
		}
		var err error
		kube, err = cluster.Start(context.Background(), cluster.Options{
			CRDDirectoryPaths: []string{filepath.Join(repoRoot(), "config", "crd", "bases")},
			Scheme:            controllers.Scheme(),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer kube.Stop()
		if k, err = kube.Client(controllers.Scheme()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func isBench() bool {
	for _, a := range os.Args {
		if strings.HasPrefix(a, "-test.bench") && !strings.HasSuffix(a, "=") {
			return true
		}
	}
	return false
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BenchmarkInstallDemo runs the operator binary as its own process, as in a
// cluster, and times each demo install from the MeshInstall's creation until
// every object is applied (status.inventory written) and until Ready (every
// Deployment's pods ready on the fake nodes). After the last install it
// reports the operator process's resident memory.
func BenchmarkInstallDemo(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the operator: %v\n%s", err, out)
	}
	op := exec.Command(bin, "--metrics-bind-address=0", "--health-probe-bind-address=0")
	op.Env = append(os.Environ(), "KUBECONFIG="+kube.Kubeconfig)
	op.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := op.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = op.Process.Signal(syscall.SIGTERM)
		_, _ = op.Process.Wait()
	}()

	var applied, ready time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench-demo-%d", i)
		mi := &v1alpha1.MeshInstall{}
		mi.Name = name
		mi.Spec.Profile = "demo"
		mi.Spec.Namespace = fmt.Sprintf("bench-demo-%d", i)
		start := time.Now()
		if err := k.Create(context.Background(), mi); err != nil {
			b.Fatal(err)
		}
		appliedAt := time.Time{}
		waitFor(b, name, func(mi *v1alpha1.MeshInstall) bool {
			if appliedAt.IsZero() && mi.Status.Inventory != nil && len(mi.Status.Inventory.Entries) > 0 {
				appliedAt = time.Now()
			}
			c := apimeta.FindStatusCondition(mi.Status.Conditions, controllers.ConditionReady)
			return c != nil && c.Status == metav1.ConditionTrue && mi.Status.ObservedGeneration == mi.Generation
		})
		ready += time.Since(start)
		applied += appliedAt.Sub(start)
		if i == b.N-1 {
			b.StopTimer()
			time.Sleep(2 * time.Second)
			b.ReportMetric(rssMiB(b, op.Process.Pid), "MiB-operator-rss")
		}
		b.StopTimer()
		deleteAndWait(b, name)
		b.StartTimer()
	}
	b.ReportMetric(float64(applied.Milliseconds())/float64(b.N), "ms-to-applied/op")
	b.ReportMetric(float64(ready.Milliseconds())/float64(b.N), "ms-to-ready/op")
}

// noop is a Ready demo install with an in-process operator, set up once per
// process: Go runs a benchmark function more than once.
var noop struct {
	once    sync.Once
	op      *operator.Operator
	counter *apicount.Counter
	err     error
}

const noopName = "bench-noop"

func setupNoop(b *testing.B) {
	noop.once.Do(func() {
		noop.counter = &apicount.Counter{}
		cfg := rest.CopyConfig(kube.Config)
		cfg.QPS, cfg.Burst = 200, 400
		cfg.WrapTransport = noop.counter.Wrap
		noop.op, noop.err = operator.New(cfg, operator.Options{Render: render.Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"}})
		if noop.err != nil {
			return
		}
		// Runs until the process ends; TestMain stops the cluster.
		go func() { _ = noop.op.Manager.Start(context.Background()) }()
		mi := &v1alpha1.MeshInstall{}
		mi.Name = noopName
		mi.Spec.Profile = "demo"
		mi.Spec.Namespace = "bench-noop"
		if noop.err = k.Create(context.Background(), mi); noop.err != nil {
			return
		}
		waitFor(b, noopName, func(mi *v1alpha1.MeshInstall) bool {
			c := apimeta.FindStatusCondition(mi.Status.Conditions, controllers.ConditionReady)
			return c != nil && c.Status == metav1.ConditionTrue && mi.Status.ObservedGeneration == mi.Generation
		})
		// Wait until the operator is quiet: the echo of its own writes is over.
		for quiet := 0; quiet < 2; {
			mark := noop.counter.Total()
			time.Sleep(time.Second)
			if n, _ := noop.counter.Since(mark); n == 0 {
				quiet++
			} else {
				quiet = 0
			}
		}
	})
	if noop.err != nil {
		b.Fatal(noop.err)
	}
}

// BenchmarkNoopReconcile reconciles a Ready demo install that nothing
// changed, and counts the writes each reconcile sends to the API server.
func BenchmarkNoopReconcile(b *testing.B) {
	setupNoop(b)
	req := ctrl.Request{}
	req.Name = noopName
	ctx := ctrl.LoggerInto(context.Background(), ctrl.Log)
	mark := noop.counter.Total()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := noop.op.Reconciler.Reconcile(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	n, which := noop.counter.Since(mark)
	b.ReportMetric(float64(n)/float64(b.N), "writes/op")
	if n > 0 {
		b.Logf("writes during no-op reconciles:\n%s", which)
	}
}

func waitFor(b *testing.B, name string, done func(*v1alpha1.MeshInstall) bool) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		mi := &v1alpha1.MeshInstall{}
		if err := k.Get(context.Background(), client.ObjectKey{Name: name}, mi); err != nil {
			b.Fatal(err)
		}
		if done(mi) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("MeshInstall %s did not get there in time", name)
}

func deleteAndWait(b *testing.B, name string) {
	mi := &v1alpha1.MeshInstall{}
	mi.Name = name
	if err := k.Delete(context.Background(), mi); err != nil && !apierrors.IsNotFound(err) {
		b.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if err := k.Get(context.Background(), client.ObjectKey{Name: name}, mi); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("MeshInstall %s was not deleted in time", name)
}

// rssMiB reads a process's resident set size from /proc.
func rssMiB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS in /proc status")
	return 0
}
