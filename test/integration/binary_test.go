package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/operator"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

// The operator binary, as its Deployment runs it: it elects a leader with a
// Lease, serves /healthz, /readyz and /metrics, and on SIGTERM stops cleanly
// and releases the Lease so a new replica takes over at once.
func TestOperatorBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the operator: %v\n%s", err, out)
	}
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mizzen-leader"}}
	if err := k.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	probes, metrics := freePort(t), freePort(t)
	log := &cluster.SyncBuffer{}
	cmd := exec.Command(bin, "--leader-elect", "--leader-election-namespace=mizzen-leader",
		"--health-probe-bind-address=127.0.0.1:"+probes, "--metrics-bind-address=127.0.0.1:"+metrics)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kube.Kubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	for _, path := range []string{"/healthz", "/readyz"} {
		eventually(t, 30*time.Second, "GET "+path+" answers 200", func() error {
			return httpOK("http://127.0.0.1:"+probes+path, "")
		})
	}
	lease := &coordinationv1.Lease{}
	eventually(t, 30*time.Second, "the operator holds the leader Lease", func() error {
		if err := get(t, lease, "mizzen-leader", operator.LeaderElectionID); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	eventually(t, 30*time.Second, "/metrics serves the controller's metrics", func() error {
		return httpOK("http://127.0.0.1:"+metrics+"/metrics", `controller_runtime_reconcile_total{controller="meshinstall"`)
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the operator exited with %v on SIGTERM:\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the operator did not stop within 30s of SIGTERM:\n%s", log.String())
	}
	if err := get(t, lease, "mizzen-leader", operator.LeaderElectionID); err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("the Lease is still held by %q after a clean stop", *lease.Spec.HolderIdentity)
	}
}

func httpOK(url, contains string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	if contains != "" && !strings.Contains(string(body), contains) {
		return fmt.Errorf("no %q in the response", contains)
	}
	return nil
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
