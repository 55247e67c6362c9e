package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// countingServer is a backend that counts the connections it accepted.
func countingServer(t testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func h1Options(t testing.TB, common *corev3.HttpProtocolOptions) map[string]*anypb.Any {
	a, err := anypb.New(&httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: common})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{HTTPProtocolOptionsName: a}
}

func do(t testing.TB, cl *Cluster, method, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://svc/path?q=1", rd)
	resp, _, err := cl.RoundTrip(req, RequestOptions{})
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s body: %v", method, err)
	}
	return resp, string(b)
}

func TestH1KeepAlive(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Uri", r.RequestURI)
		w.Write(append([]byte(r.Method+" "), b...))
	})
	cl := mustBuild(t, snapshot(staticCluster("c", addrOf(srv))), nil, nil).Get("c")
	for i := range 5 {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", "hello"
		}
		resp, got := do(t, cl, method, body)
		if want := strings.TrimSpace(method + " " + body); strings.TrimSpace(got) != want || resp.Header.Get("X-Uri") != "/path?q=1" {
			t.Fatalf("got %q %q, want %q", got, resp.Header.Get("X-Uri"), want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 kept alive", n)
	}
	if n := cl.state.active.Load(); n != 0 {
		t.Fatalf("%d requests still active", n)
	}
}

func TestH1MaxRequestsPerConnection(t *testing.T) {
	var closes atomic.Int32
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Close {
			closes.Add(1)
		}
	})
	c := staticCluster("c", addrOf(srv))
	c.TypedExtensionProtocolOptions = h1Options(t, &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)})
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	for range 4 {
		do(t, cl, "GET", "")
	}
	if n, m := conns.Load(), closes.Load(); n != 2 || m != 2 {
		t.Fatalf("%d connections, %d asked to close; want 2 and 2", n, m)
	}
}

func TestH1IdleTimeout(t *testing.T) {
	var closed atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := staticCluster("c", addrOf(srv))
	c.TypedExtensionProtocolOptions = h1Options(t, &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(50 * time.Millisecond)})
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	do(t, cl, "GET", "")
	waitFor(t, func() bool { return closed.Load() == 1 })
	if n := cl.state.connections.Load(); n != 0 {
		t.Fatalf("%d connections counted open after the idle timeout", n)
	}
}

func TestH1ChunkedBothWaysWithTrailers(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked" {
			t.Errorf("request framing %v, want chunked", r.TransferEncoding)
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write(b)
		w.(http.Flusher).Flush()
		w.Write([]byte("!"))
		w.Header().Set("X-Sum", "42")
	})
	cl := mustBuild(t, snapshot(staticCluster("c", addrOf(srv))), nil, nil).Get("c")
	for range 2 {
		pr, pw := io.Pipe()
		go func() {
			for _, s := range []string{"a", strings.Repeat("b", 40<<10), "c"} {
				pw.Write([]byte(s))
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", "http://svc/", pr)
		req.ContentLength = -1
		resp, _, err := cl.RoundTrip(req, RequestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) != 2+40<<10+1 || resp.Trailer.Get("X-Sum") != "42" {
			t.Fatalf("body %d bytes (%v), trailer %q", len(b), err, resp.Trailer.Get("X-Sum"))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestH1LargeBodyEcho(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	cl := mustBuild(t, snapshot(staticCluster("c", addrOf(srv))), nil, nil).Get("c")
	big := strings.Repeat("x", 1<<20)
	if _, got := do(t, cl, "PUT", big); got != big {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(big))
	}
}

func TestH1HeadAndNoContent(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("q") == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Length", "1000")
		if r.Method != http.MethodHead {
			w.Write(make([]byte, 1000))
		}
	})
	cl := mustBuild(t, snapshot(staticCluster("c", addrOf(srv))), nil, nil).Get("c")
	for range 2 {
		resp, body := do(t, cl, "HEAD", "")
		if resp.ContentLength != 1000 || body != "" {
			t.Fatalf("HEAD: length %d, body %q", resp.ContentLength, body)
		}
		req, _ := http.NewRequest("DELETE", "http://svc/", nil)
		r, _, err := cl.RoundTrip(req, RequestOptions{})
		if err != nil || r.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %v %v", r, err)
		}
		r.Body.Close() // closed without reading: nothing was left to read
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// rawBackend serves each connection with fn on a loopback listener.
func rawBackend(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) (string, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String(), &conns
}

func TestH1InterimResponses(t *testing.T) {
	addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	cl := mustBuild(t, snapshot(staticCluster("c", addr)), nil, nil).Get("c")
	req, _ := http.NewRequest("POST", "http://svc/", strings.NewReader("data"))
	req.Header.Set("Expect", "100-continue")
	resp, _, err := cl.RoundTrip(req, RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
}

func TestH1ConnectionCloseAndStaleConnections(t *testing.T) {
	var n atomic.Int32
	addr, conns := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			switch n.Add(1) {
			case 1: // asks to close
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na")
				return
			case 2: // closes once idle, without saying so
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
				time.Sleep(20 * time.Millisecond)
				return
			case 3: // a body delimited by the end of the connection
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nccc")
				return
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd")
			}
		}
	})
	cl := mustBuild(t, snapshot(staticCluster("c", addr)), nil, nil).Get("c")
	for i, want := range []string{"a", "b", "ccc", "d", "d"} {
		if i == 2 {
			time.Sleep(100 * time.Millisecond) // the second connection is closed by now
		}
		if _, got := do(t, cl, "POST", "x"); got != want {
			t.Fatalf("request %d: %q, want %q", i+1, got, want)
		}
	}
	if c := conns.Load(); c != 4 {
		t.Fatalf("%d connections, want 4", c)
	}
	if open := cl.state.connections.Load(); open != 1 {
		t.Fatalf("%d connections counted open, want 1", open)
	}
}

func TestH1ErrorsMidBody(t *testing.T) {
	addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
	})
	cl := mustBuild(t, snapshot(staticCluster("c", addr)), nil, nil).Get("c")
	resp, _, err := get(t, cl, RequestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body error %v, want unexpected EOF", err)
	}
	resp.Body.Close()
	waitFor(t, func() bool { return cl.state.connections.Load() == 0 && cl.state.active.Load() == 0 })

	// A response that never comes: the request's context ends it.
	hang, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	cl = mustBuild(t, snapshot(staticCluster("c", hang)), nil, nil).Get("c")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/", nil)
	if _, _, err := cl.RoundTrip(req, RequestOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	waitFor(t, func() bool { return cl.state.connections.Load() == 0 })

	// A malformed response is a reset.
	bad, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.WriteString(c, "HTTP/1.1 abc\r\n\r\n")
	})
	cl = mustBuild(t, snapshot(staticCluster("c", bad)), nil, nil).Get("c")
	if _, _, err := get(t, cl, RequestOptions{}); !errors.Is(err, ErrUpstreamReset) {
		t.Fatalf("err = %v, want a reset", err)
	}
}

func TestH1PendingRequestsWaitForTheConnection(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	c := staticCluster("c", addrOf(srv))
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(10),
	}}}
	cl := mustBuild(t, snapshot(c), nil, nil).Get("c")
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(t, cl, "GET", "")
		}()
	}
	waitFor(t, func() bool { return cl.state.active.Load() == 3 })
	// A pending request gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/", nil)
	if _, _, err := cl.RoundTrip(req, RequestOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	close(release)
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (max_connections)", n)
	}
}
