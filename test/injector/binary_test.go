package injector

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mizzen-mesh/mizzen/test/cluster"
)

// The cmd/injector binary, started with the chart's arguments and the
// identity of its ServiceAccount, injects the pods of its revision and
// stops cleanly on SIGTERM.
func TestBinary(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "injector")
	build := exec.Command("go", "build", "-o", bin, "./cmd/injector")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/injector: %v\n%s", err, out)
	}

	o := binaryI.opts
	cmd := exec.Command(bin,
		fmt.Sprintf("--port=%d", o.Port),
		fmt.Sprintf("--monitoring-port=%d", o.MonitoringPort),
		"--inject-config="+o.InjectConfigDir,
		"--webhook-config="+o.WebhookConfig,
		"--service="+o.Service,
		"--revision="+o.Revision,
		"--kubeconfig="+binaryI.kubeconfig,
		"--bind-address=127.0.0.1",
		"--tls-extra-sans=127.0.0.1",
		"--reload-interval=200ms",
	)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+meshNamespace)
	out := &cluster.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	if err := binaryI.waitReady(t.Context()); err != nil {
		t.Fatalf("%v\ninjector output:\n%s", err, out)
	}
	pod := mustCreate(t, appPod(namespace(t, map[string]string{"istio.io/rev": "bin"})))
	assertInjected(t, pod, "bin")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30s after SIGTERM\n%s", out)
	}
	if !strings.Contains(out.String(), "shutting down") {
		t.Errorf("no graceful shutdown in the output:\n%s", out)
	}
	// Down, the webhook only affects its own revision's namespaces.
	if _, err := http.Get(binaryI.monitorURL + "/ready"); err == nil {
		t.Error("the monitoring port still answers after exit")
	}
	assertNotInjected(t, mustCreate(t, appPod(namespace(t, nil))))
	if _, err := create(t, appPod(namespace(t, map[string]string{"istio.io/rev": "bin"}))); err == nil {
		t.Error("with failurePolicy Fail, a pod of the stopped revision was admitted")
	}
}
