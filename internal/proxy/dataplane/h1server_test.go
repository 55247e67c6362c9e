package dataplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// h1Test serves a handler with an hcmServer's HTTP/1.1 loop on a
// loopback listener, the way the data plane hands it connections.
type h1Test struct {
	s     *hcmServer
	addr  string
	conns atomic.Int32 // served by the HTTP/1.1 loop
}

func newH1Test(t *testing.T, cfg *hcmv3.HttpConnectionManager, h http.HandlerFunc) *h1Test {
	t.Helper()
	if cfg == nil {
		cfg = &hcmv3.HttpConnectionManager{}
	}
	ht := &h1Test{s: newHCMServer("test", cfg, false, slog.New(slog.DiscardHandler))}
	ht.s.handler = h
	ht.s.direct = nil
	ht.s.srv.Handler = h
	ht.s.start()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ht.addr = l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				bc := newBufConn(c)
				if ok, br := ht.s.h1Eligible(bc); ok {
					ht.conns.Add(1)
					ht.s.serveH1(bc, br, &connInfo{})
					return
				}
				ht.s.serve(bc, &connInfo{})
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); ht.s.close() })
	return ht
}

// raw sends bytes and returns the connection with a reader of the answer.
func (ht *h1Test) raw(t *testing.T, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ht.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp, string(b)
}

func TestH1ServerKeepAliveAndFraming(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/small": // length learned from the complete response
			fmt.Fprintf(w, "%s %s %s", r.Method, r.Host, b)
		case "/big": // too long to hold: chunked
			w.Write([]byte(strings.Repeat("x", 10<<10)))
		case "/stream": // flushed: chunked, with a trailer
			w.Write([]byte("a"))
			w.(http.Flusher).Flush()
			w.Write([]byte("b"))
			w.Header().Set(http.TrailerPrefix+"X-Sum", "2")
		case "/declared":
			w.Header().Set("Content-Length", "3")
			w.Write([]byte("abc"))
		case "/head":
			w.Header().Set("Content-Length", "5")
			w.Write([]byte("hello"))
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.WriteHeader(http.StatusNotModified)
		}
	})
	_, br := ht.raw(t, "POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"+
		"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n"+
		"GET /big HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /declared HTTP/1.1\r\nHost: a\r\n\r\n"+
		"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /nocontent HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /notmodified HTTP/1.1\r\nHost: a\r\n\r\n")
	for i := range 2 {
		resp, body := readResp(t, br, "POST")
		if body != "POST a xyz" || resp.ContentLength != int64(len(body)) || resp.Header.Get("Date") == "" {
			t.Fatalf("small %d: %q, length %d, header %v", i, body, resp.ContentLength, resp.Header)
		}
	}
	if resp, body := readResp(t, br, "GET"); len(body) != 10<<10 || resp.ContentLength != -1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("big: %d bytes, length %d", len(body), resp.ContentLength)
	}
	if resp, body := readResp(t, br, "GET"); body != "ab" || resp.Trailer.Get("X-Sum") != "2" {
		t.Fatalf("stream: %q, trailer %v", body, resp.Trailer)
	}
	if resp, body := readResp(t, br, "GET"); body != "abc" || resp.ContentLength != 3 {
		t.Fatalf("declared: %q %d", body, resp.ContentLength)
	}
	if resp, body := readResp(t, br, "HEAD"); body != "" || resp.ContentLength != 5 {
		t.Fatalf("HEAD: %q %d", body, resp.ContentLength)
	}
	for _, code := range []int{204, 304} {
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != code || body != "" || resp.Header.Get("Content-Length") != "" || len(resp.TransferEncoding) > 0 {
			t.Fatalf("%d: %d %q %v", code, resp.StatusCode, body, resp.Header)
		}
	}
	if n := ht.conns.Load(); n != 1 {
		t.Fatalf("%d connections served by the loop, want 1", n)
	}
}

func TestH1ServerWithNetHTTPClient(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for _, size := range []int{0, 1, 1024, 1 << 20} {
		resp, err := c.Post("http://"+ht.addr+"/", "text/plain", strings.NewReader(strings.Repeat("y", size)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprint(size) {
			t.Fatalf("%d bytes sent, server read %s", size, b)
		}
	}
	if n := ht.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestH1ServerConnectionClose(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		_, br := ht.raw(t, req)
		resp, body := readResp(t, br, "GET")
		if body != "ok" || !resp.Close {
			t.Fatalf("%q: %q, close %v", req, body, resp.Close)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("%q: connection still open (%v)", req, err)
		}
	}
	// HTTP/1.0 keep-alive is honoured.
	_, br := ht.raw(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	for range 2 {
		if resp, body := readResp(t, br, "GET"); body != "ok" || resp.Close {
			t.Fatalf("1.0 keep-alive: %q close %v", body, resp.Close)
		}
	}
}

func TestH1ServerExpectContinue(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/deny" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	c, br := ht.raw(t, "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, want 100 Continue", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "body")
	if _, body := readResp(t, br, "POST"); body != "body" {
		t.Fatalf("echo %q", body)
	}
	// Refused without reading: no 100, and the connection closes since
	// the body may or may not follow.
	_, br = ht.raw(t, "POST /deny HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if resp, _ := readResp(t, br, "POST"); resp.StatusCode != 403 || !resp.Close {
		t.Fatalf("deny: %d close %v", resp.StatusCode, resp.Close)
	}
	_, br = ht.raw(t, "POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 0\r\n\r\n")
	if resp, _ := readResp(t, br, "POST"); resp.StatusCode != http.StatusExpectationFailed {
		t.Fatalf("unknown expectation: %d", resp.StatusCode)
	}
}

func TestH1ServerUpgrade(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo: "+line)
	})
	// The first upgraded bytes arrive with the request.
	_, br := ht.raw(t, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	if line, _ := br.ReadString('\n'); line != "echo: hello\n" {
		t.Fatalf("upgraded stream: %q", line)
	}
}

func TestH1ServerErrors(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			w.Write([]byte(strings.Repeat("z", 8<<10)))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/short":
			w.Header().Set("Content-Length", "10")
			w.Write([]byte("abc"))
		}
	})
	for _, tc := range []struct{ req, status string }{
		{"GARBAGE\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\n\r\n", "400"}, // no Host
		{"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 1<<20+16<<10) + "\r\n\r\n", "431"},
		{"GET / HTTP/2.5\r\nHost: a\r\n\r\n", "505"},
	} {
		_, br := ht.raw(t, tc.req)
		line, _ := br.ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 "+tc.status) {
			t.Errorf("%.30q: %q, want %s", tc.req, line, tc.status)
		}
	}
	// A handler aborting mid-body resets the connection: the client sees
	// a truncated chunked body.
	_, br := ht.raw(t, "GET /abort HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("aborted body read without error")
	}
	// A body shorter than its Content-Length ends the connection.
	_, br = ht.raw(t, "GET /short HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v", err)
	}
}

func TestH1ServerClientGoneCancelsRequest(t *testing.T) {
	cancelled := make(chan struct{})
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(5 * time.Second):
		}
	})
	c, _ := ht.raw(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(2 * h1WatchAfter)
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the request's context was not cancelled when the client went away")
	}
}

func TestH1ServerIdleTimeoutAndDrain(t *testing.T) {
	release := make(chan struct{})
	cfg := &hcmv3.HttpConnectionManager{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(100 * time.Millisecond)}}
	ht := newH1Test(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("ok"))
	})
	_, br := ht.raw(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResp(t, br, "GET")
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF || time.Since(start) > 2*time.Second {
		t.Fatalf("idle connection: %v after %v", err, time.Since(start))
	}

	// Draining: the idle connection closes, the busy one finishes its
	// request with Connection: close.
	idle, idleBr := ht.raw(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResp(t, idleBr, "GET")
	_, busyBr := ht.raw(t, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(20 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- ht.s.shutdown(context.Background()) }()
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idleBr.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection during drain: %v", err)
	}
	close(release)
	if resp, body := readResp(t, busyBr, "GET"); body != "ok" || !resp.Close {
		t.Fatalf("in-flight request: %q close %v", body, resp.Close)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestH1ServerLeavesHTTP2ToNetHTTP(t *testing.T) {
	ht := newH1Test(t, nil, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(r.Proto)) })
	resp, body := get(t, h2cClient(), "http://"+ht.addr+"/")
	if resp.ProtoMajor != 2 || body != "HTTP/2.0" {
		t.Fatalf("h2c prior knowledge: %s %q", resp.Proto, body)
	}
	if n := ht.conns.Load(); n != 0 {
		t.Fatalf("%d HTTP/2 connections served by the HTTP/1.1 loop", n)
	}
}
