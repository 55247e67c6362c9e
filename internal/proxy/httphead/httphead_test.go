package httphead

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// The messages both fast paths must take, and some they must leave to
// net/http; every one is also a fuzz seed.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /echo?x=1&y=%20 HTTP/1.1\r\nhost: echo.perf.svc.cluster.local\r\nuser-agent: fortio.org/fortio-1.69\r\nx-request-id: 4b5a\r\nx-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7\r\n\r\n",
	"POST /echo HTTP/1.1\r\nHost: a:8080\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
	"PUT /p/%2F/q HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-Custom-HEADER:  spaced value \t\r\nx-custom-header: second\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nCache-Control: max-age=1\r\n\r\n",
	"OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: http://b\r\nAccess-Control-Request-Method: PUT\r\nEmpty:\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nExpect: 100-continue\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nObs: caf\xc3\xa9\r\n\r\n",
	// Left to net/http:
	"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nFolded: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
	"GET / HTTP/1.1\r\nBad: x\x01y\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
	"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET http://a/b HTTP/1.1\r\nHost: c\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n",
	"G@T / HTTP/1.1\r\n\r\n",
	"GET /\x7f HTTP/1.1\r\n\r\n",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/octet-stream\r\nDate: Tue, 08 Dec 2026 01:26:25 GMT\r\n\r\nhello",
	"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nx-envoy-upstream-service-time: 3\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
	"HTTP/1.1 404 Not Found \r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nPragma: no-cache\r\n\r\nno!",
	"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
	// Left to net/http:
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nuntil close",
	"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok",
}

// sameRequest fails when the fast path took msg and its result differs
// from net/http's; it reports whether the fast path took it.
func sameRequest(t *testing.T, msg string) bool {
	t.Helper()
	var r Reader
	got, ok := r.parseRequest(headOf(msg))
	if !ok {
		return false
	}
	want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(msg)))
	if err != nil {
		t.Fatalf("fast path took %q, net/http: %v", msg, err)
	}
	br := bufio.NewReader(strings.NewReader(msg))
	viaReader, err := (&Reader{}).ReadRequest(br)
	if err != nil {
		t.Fatalf("ReadRequest(%q): %v", msg, err)
	}
	for _, g := range []*http.Request{got, viaReader} {
		if g.Method != want.Method || g.RequestURI != want.RequestURI || g.Proto != want.Proto ||
			g.ProtoMajor != want.ProtoMajor || g.ProtoMinor != want.ProtoMinor || g.Host != want.Host ||
			g.ContentLength != want.ContentLength || g.Close != want.Close ||
			!reflect.DeepEqual(g.URL, want.URL) || !reflect.DeepEqual(g.Header, want.Header) ||
			g.TransferEncoding != nil || g.Trailer != nil {
			t.Fatalf("%q:\nfast     %+v\nnet/http %+v", msg, g, want)
		}
	}
	if (viaReader.Body == http.NoBody) != (want.Body == http.NoBody) {
		t.Fatalf("%q: body %T, net/http %T", msg, viaReader.Body, want.Body)
	}
	sameBody(t, msg, viaReader.Body, want.Body)
	return true
}

func sameResponse(t *testing.T, msg string, req *http.Request) bool {
	t.Helper()
	var r Reader
	got, ok := r.parseResponse(headOf(msg), req)
	if !ok {
		return false
	}
	want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(msg)), req)
	if err != nil {
		t.Fatalf("fast path took %q, net/http: %v", msg, err)
	}
	viaReader, err := (&Reader{}).ReadResponse(bufio.NewReader(strings.NewReader(msg)), req)
	if err != nil {
		t.Fatalf("ReadResponse(%q): %v", msg, err)
	}
	for _, g := range []*http.Response{got, viaReader} {
		if g.Status != want.Status || g.StatusCode != want.StatusCode || g.Proto != want.Proto ||
			g.ProtoMajor != want.ProtoMajor || g.ProtoMinor != want.ProtoMinor ||
			g.ContentLength != want.ContentLength || g.Close != want.Close || g.Request != want.Request ||
			!reflect.DeepEqual(g.Header, want.Header) || g.TransferEncoding != nil || g.Trailer != nil {
			t.Fatalf("%q:\nfast     %+v\nnet/http %+v", msg, g, want)
		}
	}
	if (viaReader.Body == http.NoBody) != (want.Body == http.NoBody) {
		t.Fatalf("%q: body %T, net/http %T", msg, viaReader.Body, want.Body)
	}
	sameBody(t, msg, viaReader.Body, want.Body)
	return true
}

// sameBody reads both bodies in small steps: the same bytes and the same
// kind of end.
func sameBody(t *testing.T, msg string, got, want io.Reader) {
	t.Helper()
	g, gerr := readSmall(got)
	w, werr := readSmall(want)
	if !bytes.Equal(g, w) || !errors.Is(gerr, werr) {
		t.Fatalf("%q: body %q (%v), net/http %q (%v)", msg, g, gerr, w, werr)
	}
}

func readSmall(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
	}
}

func headOf(msg string) []byte {
	br := bufio.NewReader(strings.NewReader(msg))
	br.Peek(1)
	return bufferedHead(br)
}

func TestRequestsLikeNetHTTP(t *testing.T) {
	took := 0
	for _, m := range requestSeeds {
		if sameRequest(t, m) {
			took++
		}
	}
	if took != 11 {
		t.Errorf("fast path took %d of the requests, want the first 11", took)
	}
	// What it leaves to net/http still reads (or fails) as net/http's.
	for _, m := range requestSeeds[11:] {
		var r Reader
		if _, ok := r.parseRequest(headOf(m)); ok {
			t.Errorf("fast path took %q", m)
		}
		got, gerr := (&Reader{}).ReadRequest(bufio.NewReader(strings.NewReader(m)))
		want, werr := http.ReadRequest(bufio.NewReader(strings.NewReader(m)))
		if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Errorf("%q: error %v, net/http %v", m, gerr, werr)
		}
		if got != nil && !reflect.DeepEqual(got.Header, want.Header) {
			t.Errorf("%q: header %v, net/http %v", m, got.Header, want.Header)
		}
	}
}

func TestResponsesLikeNetHTTP(t *testing.T) {
	get, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
	head, _ := http.NewRequest(http.MethodHead, "http://a/", nil)
	took := 0
	for _, m := range responseSeeds {
		if sameResponse(t, m, get) {
			took++
		}
		sameResponse(t, m, nil)
		if sameResponse(t, m, head) {
			t.Errorf("%q: fast path took a response to HEAD", m)
		}
	}
	if took != 5 {
		t.Errorf("fast path took %d of the responses, want the first 5", took)
	}
}

// A keep-alive connection: messages back to back, bodies read through
// the same buffer, names interned once.
func TestPipelinedOnOneReader(t *testing.T) {
	msg := strings.Repeat("POST /a HTTP/1.1\r\nHost: h\r\nX-Mine: 1\r\nContent-Length: 3\r\n\r\nabc", 3) + "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(msg))
	var r Reader
	for i := 0; i < 4; i++ {
		if _, err := br.Peek(1); err != nil {
			t.Fatal(err)
		}
		req, err := r.ReadRequest(br)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 && (string(b) != "abc" || req.URL.Path != "/a" || req.Header.Get("X-Mine") != "1") {
			t.Fatalf("request %d: %s %q %v", i, req.URL, b, req.Header)
		}
		if i == 3 && (req.URL.Path != "/b" || len(b) != 0) {
			t.Fatalf("last request: %s %q", req.URL, b)
		}
	}
	if len(r.names) != 1 || r.names["X-Mine"] != "X-Mine" {
		t.Errorf("names %v", r.names)
	}
}

func TestBodyAfterClose(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"))
	br.Peek(1)
	req, err := (&Reader{}).ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	req.Body.Close()
	if _, err := req.Body.Read(make([]byte, 1)); err != http.ErrBodyReadAfterClose {
		t.Fatalf("read after close: %v", err)
	}
}

func TestHeadSplitAcrossReads(t *testing.T) {
	// Only part of the head is buffered: net/http reads the rest.
	r := io.MultiReader(strings.NewReader("GET /x HTTP/1.1\r\nHo"), strings.NewReader("st: a\r\n\r\n"))
	br := bufio.NewReader(r)
	br.Peek(1)
	if _, ok := (&Reader{}).BufferedRequest(br); ok || br.Buffered() != len("GET /x HTTP/1.1\r\nHo") {
		t.Fatalf("a partial head was taken (%d bytes left buffered)", br.Buffered())
	}
	req, err := (&Reader{}).ReadRequest(br)
	if err != nil || req.Host != "a" || req.URL.Path != "/x" {
		t.Fatalf("%v %v", req, err)
	}
}

func FuzzRequest(f *testing.F) {
	for _, m := range requestSeeds {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, msg string) { sameRequest(t, msg) })
}

func FuzzResponse(f *testing.F) {
	for _, m := range responseSeeds {
		f.Add(m)
	}
	get, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
	f.Fuzz(func(t *testing.T, msg string) { sameResponse(t, msg, get) })
}

func BenchmarkReadRequest(b *testing.B) {
	msg := "POST /echo HTTP/1.1\r\nHost: echo.perf.svc.cluster.local\r\nUser-Agent: fortio.org/fortio-1.69.1\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\nX-Request-Id: 0f5e3b9c-2f7e-4a53-9d47-ad9c6bb7ef31\r\nX-Forwarded-Proto: http\r\nX-Envoy-Attempt-Count: 1\r\nX-Envoy-Peer-Metadata-Id: sidecar~10.0.0.1~client.perf~perf.svc.cluster.local\r\nX-Envoy-Peer-Metadata: ChQKDkFQUF9DT05UQUlORVJTEgIaAAoaCgpDTFVTVEVSX0lEEgwaCkt1YmVybmV0ZXM=\r\n\r\n" + strings.Repeat("p", 1024)
	for _, c := range []struct {
		name string
		read func(*bufio.Reader) (*http.Request, error)
	}{
		{"httphead", new(Reader).ReadRequest},
		{"net-http", http.ReadRequest},
	} {
		b.Run(c.name, func(b *testing.B) {
			sr := strings.NewReader(msg)
			br := bufio.NewReaderSize(sr, 4096)
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(msg)
				br.Reset(sr)
				br.Peek(1)
				req, err := c.read(br)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, req.Body)
			}
		})
	}
}
