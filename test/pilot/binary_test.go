package pilot

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/pilot"
	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

// buildPilot builds cmd/pilot into dir.
func buildPilot(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "pilot")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/mizzen-mesh/mizzen/cmd/pilot")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/pilot: %v\n%s", err, out)
	}
	return bin
}

// TestBinary runs the built pilot with its flags outside the cluster: it
// turns ready, serves a workload over mTLS, and stops gracefully on
// SIGTERM.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := buildPilot(t, dir)
	addrFile := filepath.Join(dir, "addresses.json")
	mesh := filepath.Join(dir, "mesh")
	if err := os.WriteFile(mesh, []byte("trustDomain: cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cmd := exec.Command(bin, "discovery", "--kubeconfig="+testCl.Kubeconfig, "--meshConfig="+mesh, "--revision=",
		"--cacerts="+filepath.Join(dir, "no-cacerts"), "--tls-extra-sans=127.0.0.1",
		"--grpcAddr=127.0.0.1:0", "--httpAddr=127.0.0.1:0", "--monitoringAddr=127.0.0.1:0", "--webhookAddr=127.0.0.1:0",
		"--debounce-after=20ms", "--debounce-max=200ms", "--shutdown-timeout=5s", "--addresses-file="+addrFile)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+meshNamespace)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	var a pilot.Addresses
	eventually(t, "the binary's addresses file", func() error {
		select {
		case err := <-exited:
			t.Fatalf("pilot exited: %v\n%s", err, logs.String())
		default:
		}
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &a)
	})
	if code, _ := httpGet(t, "http://"+a.HTTP+"/ready"); code != 200 {
		t.Errorf("/ready: %d", code)
	}
	ns := createNamespace(t, "binary-")
	webService(t, ns)
	c, err := dialXDS(t, a.GRPC, workloadTLS(t, a.GRPC, ns, "client"), xdsclient.Options{Node: node("sidecar", "10.20.0.10", "client-1", ns, "client", nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "configuration from the binary", func() error {
		if _, ok := c.Resources(xdsclient.ClusterType)["outbound|80||web."+ns+".svc.cluster.local"]; !ok {
			return fmt.Errorf("no cluster for web yet")
		}
		return nil
	})

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("pilot exited with %v after SIGTERM\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pilot still running 20s after SIGTERM\n%s", logs.String())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Error("the xDS stream outlived the server")
	}
}
