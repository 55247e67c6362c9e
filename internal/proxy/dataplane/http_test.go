package dataplane

import (
	"time"

	"fmt"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

func TestHTTPThroughListenerAndRDSRoute(t *testing.T) {
	forEngines(t, testHTTPThroughListenerAndRDSRoute)
}

func testHTTPThroughListenerAndRDSRoute(t *testing.T, engine Engine) {
	be := backend(t, "backend-a")
	port := freePort(t)
	d := newDP(t, Options{Engine: engine})
	snap := newSnap()
	snap.Clusters["a"] = staticCluster("a", be)
	snap.Routes["80"] = routeTo("80", "a")
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"))}})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	if !d.Ready() {
		t.Fatal("not ready after apply")
	}
	resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/hello", port))
	if resp.StatusCode != 200 || body != "backend-a /hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("Echo-X-Request-Id") == "" {
		t.Error("no x-request-id generated")
	}
	// h2c with prior knowledge on the same listener.
	resp, body = get(t, h2cClient(), fmt.Sprintf("http://127.0.0.1:%d/h2", port))
	if resp.StatusCode != 200 || body != "backend-a /h2" || resp.ProtoMajor != 2 {
		t.Fatalf("h2c: got %d %s %q", resp.StatusCode, resp.Proto, body)
	}
}

func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

func TestApplyErrorChangesNothing(t *testing.T) {
	be := backend(t, "a")
	port := freePort(t)
	d := newDP(t, Options{})
	snap := newSnap()
	snap.Clusters["a"] = staticCluster("a", be)
	snap.Routes["80"] = routeTo("80", "a")
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"))}})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	before, _ := d.ConfigDump()

	bad := snap.Clone()
	bad.Routes["bad"] = routeTo("bad", "a")
	newPort := freePort(t)
	bad.Listeners["l2"] = realListener("l2", newPort, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"))}})
	err := d.Apply(bad)
	if err == nil || !strings.Contains(err.Error(), "route bad") {
		t.Fatalf("want an error naming route bad, got %v", err)
	}
	bad2 := snap.Clone()
	bad2.Listeners["l3"] = realListener("l3", newPort, &listener.FilterChain{Filters: []*listener.Filter{{Name: "envoy.filters.network.mongo_proxy"}}})
	err = d.Apply(bad2)
	if err == nil || !strings.Contains(err.Error(), "listener l3") {
		t.Fatalf("want an error naming listener l3, got %v", err)
	}
	after, _ := d.ConfigDump()
	if string(before) != string(after) {
		t.Error("config changed after failed applies")
	}
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", newPort)); err == nil {
		t.Error("listener of a failed apply accepts connections")
	}
	if resp, _ := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port)); resp.StatusCode != 200 {
		t.Errorf("old listener broken: %d", resp.StatusCode)
	}
}

func TestConfigSwapUnderLoadLosesNothing(t *testing.T) {
	forEngines(t, testConfigSwapUnderLoadLosesNothing)
}

func testConfigSwapUnderLoadLosesNothing(t *testing.T, engine Engine) {
	beA, beB := backend(t, "A"), backend(t, "B")
	port := freePort(t)
	d := newDP(t, Options{Engine: engine})
	snapFor := func(i int) *snapshotT {
		s := newSnap()
		s.Clusters["a"] = staticCluster("a", beA)
		s.Clusters["b"] = staticCluster("b", beB)
		target := "a"
		if i%2 == 1 {
			target = "b"
		}
		s.Routes["80"] = routeTo("80", target)
		hc := rds("80")
		if i%4 == 3 {
			// A protocol setting: the connection's server is replaced.
			hc.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Duration(i) * time.Minute)}
		}
		if i%3 == 2 {
			// Change the listener's own config too, so connection
			// managers are replaced while requests are in flight.
			hc.StatPrefix = fmt.Sprintf("gen%d", i)
		}
		s.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, hc)}})
		return s
	}
	if err := d.Apply(snapFor(0)); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var okA, okB, failed atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			for !stop.Load() {
				resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/x", port))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b := make([]byte, 16)
				n, _ := resp.Body.Read(b)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && strings.HasPrefix(string(b[:n]), "A"):
					okA.Add(1)
				case resp.StatusCode == 200 && strings.HasPrefix(string(b[:n]), "B"):
					okB.Add(1)
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d body %q", resp.StatusCode, b[:n]))
				}
			}
		}()
	}
	for i := 1; i <= 60; i++ {
		if err := d.Apply(snapFor(i)); err != nil {
			t.Fatal(err)
		}
		for okA.Load()+okB.Load() < int64(i*5) && failed.Load() == 0 {
			// Let some requests through on each generation.
			runtimeGosched()
		}
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during swaps (first: %v); %d to A, %d to B", failed.Load(), firstErr.Load(), okA.Load(), okB.Load())
	}
	if okA.Load() == 0 || okB.Load() == 0 {
		t.Fatalf("routes did not alternate: A=%d B=%d", okA.Load(), okB.Load())
	}
}

func TestListenerAddRemove(t *testing.T) { forEngines(t, testListenerAddRemove) }

func testListenerAddRemove(t *testing.T, engine Engine) {
	be := backend(t, "a")
	p1, p2 := freePort(t), freePort(t)
	d := newDP(t, Options{Engine: engine})
	snap := newSnap()
	snap.Clusters["a"] = staticCluster("a", be)
	snap.Routes["80"] = routeTo("80", "a")
	snap.Listeners["one"] = realListener("one", p1, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"))}})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	url1, url2 := fmt.Sprintf("http://127.0.0.1:%d/", p1), fmt.Sprintf("http://127.0.0.1:%d/", p2)
	if _, err := http.Get(url2); err == nil {
		t.Fatal("second listener answers before it exists")
	}
	s2 := snap.Clone()
	s2.Listeners["two"] = realListener("two", p2, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"))}})
	if err := d.Apply(s2); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{url1, url2} {
		if resp, _ := get(t, http.DefaultClient, u); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	s3 := s2.Clone()
	delete(s3.Listeners, "one")
	if err := d.Apply(s3); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := c.Get(url1); err == nil {
		t.Fatal("removed listener still accepts")
	}
	if resp, _ := get(t, c, url2); resp.StatusCode != 200 {
		t.Fatalf("remaining listener: %d", resp.StatusCode)
	}
}
