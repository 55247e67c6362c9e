package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// load sends requests from 4 goroutines until stopped and counts the
// outcomes.
type load struct {
	ok, failed atomic.Int64
	byBody     sync.Map // body -> *atomic.Int64
	firstErr   atomic.Value
	cancel     context.CancelFunc
	done       sync.WaitGroup
}

func startLoad(url, host string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for range 4 {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for ctx.Err() == nil {
				code, body, err := get(c, url, host, nil)
				if err != nil || code != 200 {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d body %q err %v", code, body, err))
					continue
				}
				l.ok.Add(1)
				n, _ := l.byBody.LoadOrStore(body, &atomic.Int64{})
				n.(*atomic.Int64).Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) stop(t *testing.T) {
	t.Helper()
	l.cancel()
	l.done.Wait()
	if f := l.failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed; first: %v", f, f+l.ok.Load(), l.firstErr.Load())
	}
	t.Logf("%d requests succeeded", l.ok.Load())
}

func (l *load) count(body string) int64 {
	n, ok := l.byBody.Load(body)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

const shiftVS = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - %[1]q
  gateways:
  - %[2]s
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: %[3]d
    - destination:
        host: reviews
        subset: v2
      weight: %[4]d
`

func shiftSetup(t *testing.T, prefix string) (ns, url, host string) {
	ns = namespace(t, prefix)
	reviews(t, ns)
	host = ns + ".example.com"
	apply(t, ns, fmt.Sprintf(gatewayAndSubsets, host)+fmt.Sprintf(shiftVS, host, "bookinfo-gateway", 100, 0))
	url = "http://" + ingress.PodIP + ":8080/"
	eventually(t, "route through the gateway", func() error {
		code, body, err := get(client, url, host, nil)
		if err != nil || code != 200 || body != "v1" {
			return fmt.Errorf("status %d body %q err %v", code, body, err)
		}
		return nil
	})
	return ns, url, host
}

// TestVirtualServiceChangeUnderLoad shifts traffic between v1 and v2 ten
// times while requests flow: no request fails, and the shift is seen.
func TestVirtualServiceChangeUnderLoad(t *testing.T) {
	ns, url, host := shiftSetup(t, "shift")
	l := startLoad(url, host)
	for i := range 10 {
		w1 := 0
		if i%2 == 1 {
			w1 = 100
		}
		apply(t, ns, fmt.Sprintf(shiftVS, host, "bookinfo-gateway", w1, 100-w1))
		time.Sleep(700 * time.Millisecond)
	}
	l.stop(t)
	if l.count("v2") == 0 || l.count("v1") == 0 {
		t.Errorf("the shifts were not seen: v1 %d, v2 %d", l.count("v1"), l.count("v2"))
	}
}

// TestControlPlaneKilledUnderLoad kills the control plane (SIGKILL) while
// requests flow: proxies keep serving their last config, reconnect when it
// is back, and then take new config.
func TestControlPlaneKilledUnderLoad(t *testing.T) {
	ns, url, host := shiftSetup(t, "killcp")
	l := startLoad(url, host)
	time.Sleep(500 * time.Millisecond)
	m.StopPilot(true)
	time.Sleep(3 * time.Second)
	if err := m.StartPilot(context.Background()); err != nil {
		l.stop(t)
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	l.stop(t)
	// The restarted control plane pushes new config to the reconnected proxies.
	apply(t, ns, fmt.Sprintf(shiftVS, host, "bookinfo-gateway", 0, 100))
	eventually(t, "new config after the restart", func() error {
		code, body, err := get(client, url, host, nil)
		if err != nil || code != 200 || body != "v2" {
			return fmt.Errorf("status %d body %q err %v", code, body, err)
		}
		return nil
	})
}
