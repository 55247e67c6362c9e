//go:build linux

package rawio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server's end.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap", c)
	}
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s
}

// A large transfer each way at once fills the socket buffers: writes see
// EAGAIN and wait for the poller, reads return partial data; every byte
// arrives in order.
func TestLargeTransferBothWays(t *testing.T) {
	c, s := pair(t)
	up := make([]byte, 8<<20)
	down := make([]byte, 8<<20)
	rand.Read(up)
	rand.Read(down)
	errs := make(chan error, 4)
	var gotUp, gotDown []byte
	go func() { _, err := c.Write(up); errs <- err }()
	go func() { _, err := s.Write(down); errs <- err }()
	go func() {
		b := make([]byte, len(up))
		_, err := io.ReadFull(s, b)
		gotUp = b
		errs <- err
	}()
	go func() {
		b := make([]byte, len(down))
		_, err := io.ReadFull(c, b)
		gotDown = b
		errs <- err
	}()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatal("data corrupted")
	}
}

func TestEOFAfterPeerCloses(t *testing.T) {
	c, s := pair(t)
	s.Write([]byte("bye"))
	s.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want bye, nil", b, err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v", n, err)
	}
}

func TestDeadlines(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %#v is not a read OpError", err)
	}
	// A reader blocked without deadline is released by a new one.
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Now())
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read released by a deadline = %v", err)
	}
	// A writer whose peer never reads times out too.
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Write(make([]byte, 64<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a full socket past the deadline = %v", err)
	}
}

func TestClose(t *testing.T) {
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn = %v; want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed conn = %v; want net.ErrClosed", err)
	}
}

func TestResetIsAnError(t *testing.T) {
	c, s := pair(t)
	// RST: close with unread data and SO_LINGER 0.
	s.(*net.TCPConn).SetLinger(0)
	s.Close()
	time.Sleep(20 * time.Millisecond)
	_, err := c.Read(make([]byte, 1))
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "read" {
		t.Fatalf("Read after reset = %v; want a read syscall error", err)
	}
}

func TestCloseWriteAndUnwrap(t *testing.T) {
	c, s := pair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("peer read %q, %v after CloseWrite", b, err)
	}
	if _, ok := Unwrap(c).(*net.TCPConn); !ok {
		t.Fatal("Unwrap did not return the TCP connection")
	}
	if p, _ := net.Pipe(); Wrap(p) != p {
		t.Fatal("a non-TCP conn was wrapped")
	}
}

func BenchmarkPingPong(b *testing.B) {
	for _, raw := range []bool{false, true} {
		name := "net"
		if raw {
			name = "raw"
		}
		b.Run(name, func(b *testing.B) {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			defer l.Close()
			go func() {
				s, err := l.Accept()
				if err != nil {
					return
				}
				io.Copy(s, s)
			}()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			if raw {
				c = Wrap(c)
			}
			defer c.Close()
			msg := make([]byte, 1024)
			buf := make([]byte, 1024)
			b.ReportAllocs()
			for b.Loop() {
				c.Write(msg)
				io.ReadFull(c, buf)
			}
		})
	}
}
