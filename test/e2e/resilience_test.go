package e2e

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mizzen-mesh/mizzen/test/mesh"
)

// flaky starts a "flaky" service whose every other request fails with 503,
// and a sleep client; it returns the outbound URL and host.
func flaky(t *testing.T, ns string, slow time.Duration) (outbound, host string, calls *atomic.Int64) {
	t.Helper()
	calls = &atomic.Int64{}
	service(t, ns, "flaky", 8000)
	workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "flaky", Labels: map[string]string{"app": "flaky"},
		Ports: []int32{8000}, App: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := calls.Add(1)
			switch r.URL.Path {
			case "/flaky":
				if n%2 == 1 {
					http.Error(w, "try again", http.StatusServiceUnavailable)
					return
				}
			case "/slow":
				time.Sleep(slow)
			}
			fmt.Fprint(w, "ok")
		})})
	sleep := workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "sleep", Labels: map[string]string{"app": "sleep"}})
	return "http://" + sleep.OutboundIP + ":8000", "flaky." + ns + ".svc.cluster.local", calls
}

// TestRetries: a VirtualService with retries turns the backend's 503s
// into 200s; without it the client sees them.
func TestRetries(t *testing.T) {
	ns := namespace(t, "retries")
	outbound, host, calls := flaky(t, ns, 0)
	eventually(t, "route to flaky", func() error { return expect(outbound+"/ok", host, 200) })
	apply(t, ns, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: flaky
spec:
  hosts: [flaky]
  http:
  - route:
    - destination:
        host: flaky
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx
`)
	// Wait until the retry policy is in force: 20 successes in a row.
	eventually(t, "retries in force", func() error {
		for range 20 {
			if err := expect(outbound+"/flaky", host, 200); err != nil {
				return err
			}
		}
		return nil
	})
	before := calls.Load()
	for i := range 100 {
		if err := expect(outbound+"/flaky", host, 200); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if got := calls.Load() - before; got <= 100 {
		t.Errorf("backend saw %d calls for 100 requests: no retries happened", got)
	}
}

// TestTimeoutAndFaults: a route timeout answers 504 for a slow backend,
// an abort fault answers its status without reaching the backend, and a
// delay fault delays.
func TestTimeoutAndFaults(t *testing.T) {
	ns := namespace(t, "faults")
	outbound, host, calls := flaky(t, ns, 3*time.Second)
	eventually(t, "route to flaky", func() error { return expect(outbound+"/ok", host, 200) })
	apply(t, ns, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: flaky
spec:
  hosts: [flaky]
  http:
  - match:
    - uri:
        prefix: /slow
    route:
    - destination:
        host: flaky
    timeout: 500ms
  - match:
    - uri:
        prefix: /abort
    fault:
      abort:
        httpStatus: 418
        percentage:
          value: 100
    route:
    - destination:
        host: flaky
  - match:
    - uri:
        prefix: /delay
    fault:
      delay:
        fixedDelay: 1s
        percentage:
          value: 100
    route:
    - destination:
        host: flaky
  - route:
    - destination:
        host: flaky
`)
	eventually(t, "abort fault", func() error { return expect(outbound+"/abort", host, 418) })
	before := calls.Load()
	for range 10 {
		if err := expect(outbound+"/abort", host, 418); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != before {
		t.Errorf("aborted requests reached the backend")
	}

	start := time.Now()
	if err := expect(outbound+"/slow", host, 504); err != nil {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("the 500ms timeout answered after %v", d)
	}

	start = time.Now()
	if err := expect(outbound+"/delay", host, 200); err != nil {
		t.Fatalf("delay: %v", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("the 1s delay fault answered after %v", d)
	}
}
