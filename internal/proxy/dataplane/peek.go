package dataplane

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// peekTimeout bounds how long a listener waits for a client's first bytes
// when it must look at them (TLS ClientHello, HTTP request line) to choose a
// filter chain; server-first protocols then fall through undetected.
const peekTimeout = 2 * time.Second

// bufConn is a connection whose first bytes were peeked: reads return them
// first.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)}
}

// sniffTLS reports whether the connection starts with a TLS handshake
// record and, if so, the ClientHello's SNI and ALPN.
func sniffTLS(c *bufConn) (isTLS bool, sni string, alpn []string) {
	hdr, err := c.r.Peek(5)
	if err != nil || hdr[0] != 0x16 || hdr[1] != 0x03 {
		return false, "", nil
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	rec, err := c.r.Peek(5 + n)
	if err != nil {
		return true, "", nil
	}
	hello := parseClientHello(rec)
	if hello == nil {
		return true, "", nil
	}
	return true, hello.ServerName, hello.SupportedProtos
}

var errHelloSeen = errors.New("client hello seen")

// parseClientHello lets crypto/tls parse a ClientHello from bytes: the
// handshake stops as soon as the hello is read.
func parseClientHello(b []byte) *tls.ClientHelloInfo {
	var hello *tls.ClientHelloInfo
	srv := tls.Server(&replayConn{r: bytes.NewReader(b)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			cp := *h
			cp.SupportedProtos = append([]string(nil), h.SupportedProtos...)
			hello = &cp
			return nil, errHelloSeen
		},
	})
	_ = srv.Handshake()
	return hello
}

type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// sniffHTTP recognises plaintext HTTP: "h2c" for the HTTP/2 preface,
// "http/1.1" for an HTTP/1.x request line, "" otherwise.
func sniffHTTP(c *bufConn) string {
	n := 1
	for n <= 4096 {
		b, err := c.r.Peek(n)
		switch {
		case len(b) >= len(h2Preface) && bytes.HasPrefix(b, h2Preface):
			return "h2c"
		case len(b) < len(h2Preface) && bytes.HasPrefix(h2Preface, b):
			// Maybe the preface: wait for more.
		default:
			if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
				line := b[:i]
				sp := bytes.IndexByte(line, ' ')
				if sp <= 0 || !isToken(line[:sp]) {
					return ""
				}
				if bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0")) {
					return "http/1.1"
				}
				return ""
			}
			if sp := bytes.IndexByte(b, ' '); (sp < 0 && !isToken(b)) || (sp > 0 && !isToken(b[:sp])) || sp == 0 {
				return ""
			}
		}
		if err != nil {
			return ""
		}
		// Look at everything already received before waiting for more.
		if c.r.Buffered() > len(b) {
			n = c.r.Buffered()
		} else {
			n = len(b) + 1
		}
	}
	return ""
}

func isToken(b []byte) bool {
	for _, ch := range b {
		if ch < 'A' || ch > 'Z' {
			return false
		}
	}
	return len(b) > 0
}
