package inject

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Without an API server and a config, Run serves /metrics, stays
// unready, and stops cleanly when its context ends (SIGTERM in the binary).
func TestRunUnreadyThenGracefulStop(t *testing.T) {
	port, mon := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Port: port, MonitoringPort: mon, BindAddress: "127.0.0.1",
			InjectConfigDir: t.TempDir(), Service: "istio-sidecar-injector", Namespace: "istio-system",
			RestConfig:     &rest.Config{Host: "https://127.0.0.1:1", Timeout: 200 * time.Millisecond},
			ReloadInterval: 50 * time.Millisecond,
		})
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(mon)
	var resp *http.Response
	var err error
	for i := 0; i < 100; i++ {
		if resp, err = http.Get(base + "/ready"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready without config or certificate: %s", resp.Status)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "sidecar_injection_requests_total") {
		t.Fatal("/metrics lacks the injection counter")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}
}
