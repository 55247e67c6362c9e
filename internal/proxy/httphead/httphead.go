// Package httphead reads the heads of HTTP/1.1 requests and responses for
// the proxy's own HTTP/1.1 server and client.
//
// The common message (HTTP/1.1, a head that is already in the read buffer,
// a body framed by Content-Length or none) is parsed from the buffered
// bytes in one pass: one string holds the head, header values are slices
// of it, header names are interned (a table of well-known names plus the
// names seen before on the same connection), and one slab backs the value
// slices. Whatever is not such a message (HTTP/1.0, chunked framing,
// obsolete line folding, a head split across reads, anything malformed)
// is left untouched in the buffer and read by net/http instead, so the
// result and every error are net/http's. On the messages it takes, the
// fast path yields what net/http.ReadRequest and net/http.ReadResponse
// would (a fuzz test holds the two side by side).
package httphead

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"

	"golang.org/x/net/http/httpguts"
)

// Reader reads the messages of one connection; it is not safe for
// concurrent use. The zero value is ready.
type Reader struct {
	// names are the canonical header names seen on this connection
	// that are not in the well-known table.
	names map[string]string
}

// maxNames bounds the names a connection remembers.
const maxNames = 64

// maxFields is the most header lines the fast path takes.
const maxFields = 128

// ReadRequest reads a request head from br, like http.ReadRequest.
func (r *Reader) ReadRequest(br *bufio.Reader) (*http.Request, error) {
	if req, ok := r.BufferedRequest(br); ok {
		return req, nil
	}
	return http.ReadRequest(br)
}

// BufferedRequest reads a request whose head is already in br's buffer
// and takes the fast path, without reading from the connection; false
// leaves br as it was, for http.ReadRequest.
func (r *Reader) BufferedRequest(br *bufio.Reader) (*http.Request, bool) {
	h := bufferedHead(br)
	if h == nil {
		return nil, false
	}
	req, ok := r.parseRequest(h)
	if !ok {
		return nil, false
	}
	_, _ = br.Discard(len(h))
	if req.ContentLength > 0 {
		req.Body = &body{br: br, n: req.ContentLength}
	}
	return req, true
}

// ReadResponse reads a response head from br, like http.ReadResponse.
func (r *Reader) ReadResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	if h := bufferedHead(br); h != nil {
		if resp, ok := r.parseResponse(h, req); ok {
			_, _ = br.Discard(len(h))
			if resp.ContentLength > 0 {
				resp.Body = &body{br: br, n: resp.ContentLength}
			}
			return resp, nil
		}
	}
	return http.ReadResponse(br, req)
}

var crlfcrlf = []byte("\r\n\r\n")

// bufferedHead is the head at the start of br's buffer, through its blank
// line; nil when the buffer does not hold all of it.
func bufferedHead(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n < len(crlfcrlf) {
		return nil
	}
	b, _ := br.Peek(n)
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return nil
	}
	return b[:i+len(crlfcrlf)]
}

// parseRequest parses a whole request head (through its blank line); ok
// false leaves the message to net/http. The body is not set.
func (r *Reader) parseRequest(h []byte) (*http.Request, bool) {
	line := bytes.IndexByte(h, '\n')
	if line < 1 || h[line-1] != '\r' {
		return nil, false
	}
	rl := h[:line-1]
	sp1 := bytes.IndexByte(rl, ' ')
	if sp1 < 1 {
		return nil, false
	}
	sp2 := bytes.IndexByte(rl[sp1+1:], ' ')
	if sp2 < 1 {
		return nil, false
	}
	sp2 += sp1 + 1
	if string(rl[sp2+1:]) != "HTTP/1.1" || rl[sp1+1] != '/' {
		return nil, false
	}
	for _, c := range rl[:sp1] {
		if !isToken[c] {
			return nil, false
		}
	}
	if m := rl[:sp1]; string(m) == "CONNECT" || string(m) == "PRI" {
		return nil, false
	}
	s := string(h)
	method, uri := internMethod(s[:sp1]), s[sp1+1:sp2]
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, false
	}
	hdr, f, ok := r.parseFields(s, h, line+1)
	if !ok || f.hosts > 1 {
		return nil, false
	}
	req := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Host:          u.Host,
		RequestURI:    uri,
		ContentLength: max(f.length, 0),
		Body:          http.NoBody,
		Close:         hasCloseToken(hdr),
	}
	if req.Host == "" && f.hosts == 1 {
		req.Host = hdr["Host"][0]
	}
	delete(hdr, "Host") // as http.ReadRequest does
	fixPragma(hdr)
	return req, true
}

// parseResponse parses a whole response head to req (nil: GET); ok false
// leaves the message to net/http. Only final responses that carry a body
// of a declared length are taken. The body is not set.
func (r *Reader) parseResponse(h []byte, req *http.Request) (*http.Response, bool) {
	if req != nil && req.Method == http.MethodHead {
		return nil, false
	}
	line := bytes.IndexByte(h, '\n')
	// "HTTP/1.1 200" at least, then the end or a space and the reason.
	if line < 13 || h[line-1] != '\r' || string(h[:9]) != "HTTP/1.1 " {
		return nil, false
	}
	sl := h[:line-1]
	if len(sl) > 12 && sl[12] != ' ' {
		return nil, false
	}
	code := 0
	for _, c := range sl[9:12] {
		if c < '0' || c > '9' {
			return nil, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, false
	}
	s := string(h)
	hdr, f, ok := r.parseFields(s, h, line+1)
	if !ok || f.length < 0 {
		return nil, false
	}
	resp := &http.Response{
		Status:        s[9 : line-1],
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Body:          http.NoBody,
		ContentLength: f.length,
		Request:       req,
	}
	fixPragma(hdr)
	if hasCloseToken(hdr) {
		resp.Close = true
		delete(hdr, "Connection")
	}
	return resp, true
}

// fields is what the framing needs from the header lines.
type fields struct {
	hosts  int
	length int64 // -1: no Content-Length
}

// parseFields parses the header lines of h from off to its blank line;
// s is h as a string, which the values are slices of. ok false for
// anything the fast path leaves to net/http: folded or malformed lines,
// invalid names or values, Transfer-Encoding, Trailer, several or
// invalid Content-Length values.
func (r *Reader) parseFields(s string, h []byte, off int) (http.Header, fields, bool) {
	f := fields{length: -1}
	end := len(h) - 2 // the blank line's CRLF
	n := bytes.Count(h[off:end], crlf)
	if n > maxFields {
		return nil, f, false
	}
	hdr := make(http.Header, n)
	slab := make([]string, n)
	for off < end {
		nl := bytes.IndexByte(h[off:], '\n')
		if nl < 1 || h[off+nl-1] != '\r' {
			return nil, f, false
		}
		ln := h[off : off+nl-1]
		start := off
		off += nl + 1
		colon := bytes.IndexByte(ln, ':')
		if colon < 1 {
			return nil, f, false // also a line starting with a colon, space or tab
		}
		for _, c := range ln[:colon] {
			if !isToken[c] {
				return nil, f, false
			}
		}
		vs, ve := colon+1, len(ln)
		for _, c := range ln[vs:] {
			if !validValueByte(c) {
				return nil, f, false
			}
		}
		for vs < ve && (ln[vs] == ' ' || ln[vs] == '\t') {
			vs++
		}
		for ve > vs && (ln[ve-1] == ' ' || ln[ve-1] == '\t') {
			ve--
		}
		key := r.name(ln[:colon])
		value := s[start+vs : start+ve]
		switch key {
		case "Host":
			f.hosts++
		case "Content-Length":
			if f.length >= 0 {
				return nil, f, false
			}
			cl, ok := parseLength(value)
			if !ok {
				return nil, f, false
			}
			f.length = cl
		case "Transfer-Encoding", "Trailer":
			return nil, f, false
		}
		if vv, seen := hdr[key]; seen {
			hdr[key] = append(vv, value)
			continue
		}
		vv := slab[:1:1]
		slab = slab[1:]
		vv[0] = value
		hdr[key] = vv
	}
	return hdr, f, true
}

var crlf = []byte("\r\n")

// parseLength parses a Content-Length value as net/http does: decimal
// digits that fit in 63 bits.
func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false // 18 digits always fit; longer goes to net/http
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// name returns the canonical form of a header name made of token bytes,
// as textproto.CanonicalMIMEHeaderKey writes it, without allocating for
// names seen before.
func (r *Reader) name(b []byte) string {
	var buf [64]byte
	if len(b) > len(buf) {
		return string(canonical(b, make([]byte, len(b))))
	}
	c := canonical(b, buf[:len(b)])
	if v, ok := wellKnown[string(c)]; ok {
		return v
	}
	if v, ok := r.names[string(c)]; ok {
		return v
	}
	v := string(c)
	if r.names == nil {
		r.names = make(map[string]string)
	}
	if len(r.names) < maxNames {
		r.names[v] = v
	}
	return v
}

// canonical writes b into out (as long) in canonical form: upper case at
// the start and after each dash, lower case elsewhere.
func canonical(b, out []byte) []byte {
	upper := true
	for i, ch := range b {
		if upper && 'a' <= ch && ch <= 'z' {
			ch -= 'a' - 'A'
		} else if !upper && 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		out[i] = ch
		upper = ch == '-'
	}
	return out
}

func hasCloseToken(h http.Header) bool {
	v := h["Connection"]
	return len(v) > 0 && httpguts.HeaderValuesContainsToken(v, "close")
}

// fixPragma is net/http's: "Pragma: no-cache" implies "Cache-Control:
// no-cache" when there is no Cache-Control.
func fixPragma(h http.Header) {
	if p, ok := h["Pragma"]; ok && len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
}

var methods = [...]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions}

// internMethod returns the constant for a well-known method, so the
// request does not keep its head alive through the method alone.
func internMethod(m string) string {
	for _, k := range methods {
		if m == k {
			return k
		}
	}
	return m
}

// validValueByte: VCHAR, SP, HTAB and obs-text, as textproto accepts.
func validValueByte(c byte) bool {
	return c >= 0x20 && c != 0x7f || c == '\t'
}

var isToken = func() (t [256]bool) {
	for c := 0; c < 128; c++ {
		t[c] = httpguts.IsTokenRune(rune(c))
	}
	return t
}()

// wellKnown are the names the mesh's messages carry, interned for every
// connection.
var wellKnown = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
		"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
		"Access-Control-Request-Headers", "Access-Control-Request-Method",
		"Age", "Allow", "Authorization", "Baggage", "Cache-Control", "Connection", "Content-Disposition",
		"Content-Encoding", "Content-Language", "Content-Length", "Content-Range", "Content-Type", "Cookie",
		"Date", "Etag", "Expect", "Expires", "Forwarded", "From", "Grpc-Encoding", "Grpc-Accept-Encoding",
		"Grpc-Message", "Grpc-Status", "Grpc-Timeout", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"If-Range", "If-Unmodified-Since", "Keep-Alive", "Last-Modified", "Link", "Location", "Origin",
		"Pragma", "Proxy-Authorization", "Proxy-Connection", "Range", "Referer", "Retry-After", "Server",
		"Set-Cookie", "Te", "Traceparent", "Tracestate", "Upgrade", "User-Agent", "Vary", "Via",
		"Www-Authenticate", "X-B3-Flags", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid",
		"B3", "X-Content-Type-Options", "X-Envoy-Attempt-Count", "X-Envoy-Decorator-Operation",
		"X-Envoy-Expected-Rq-Timeout-Ms", "X-Envoy-Original-Path", "X-Envoy-Peer-Metadata",
		"X-Envoy-Peer-Metadata-Id", "X-Envoy-Upstream-Service-Time", "X-Forwarded-Client-Cert",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Ot-Span-Context", "X-Real-Ip",
		"X-Request-Id", "X-Requested-With",
	} {
		m[k] = k
	}
	return m
}()

// body is a request or response body of a declared length, read from
// the connection's buffered reader; like net/http's, it reports io.EOF
// with its last bytes and io.ErrUnexpectedEOF when the connection ends
// early. It is not safe for concurrent use: the proxy's server and
// client wrap it in bodies of their own.
type body struct {
	br     *bufio.Reader
	n      int64
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case err == io.EOF && b.n > 0:
		err = io.ErrUnexpectedEOF
	case err == nil && b.n == 0:
		err = io.EOF
	}
	return n, err
}

// Close stops further reads; the rest of the body stays unread.
func (b *body) Close() error {
	b.closed = true
	return nil
}

// Slab hands out one-value slices for headers a proxy sets, from one
// allocation instead of one each (http.Header.Set); the zero Slab
// allocates as Set does. Names must be canonical.
type Slab []string

// Set sets h[name] to the one value.
func (s *Slab) Set(h http.Header, name, value string) {
	if len(*s) == 0 {
		h[name] = []string{value}
		return
	}
	vv := (*s)[:1:1]
	*s = (*s)[1:]
	vv[0] = value
	h[name] = vv
}

// Get is http.Header.Get for a name already in canonical form: no
// canonicalization on the way.
func Get(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
