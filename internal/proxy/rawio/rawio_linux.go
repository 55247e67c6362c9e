//go:build linux

// Package rawio reads and writes the proxy's TCP connections with raw
// system calls, without telling the Go scheduler that the goroutine
// enters a system call.
//
// Why: a sidecar is idle most of the time and busy in short bursts, one
// per request. Each read(2) or write(2) made through the net package
// enters the scheduler's system-call state, and the first one of a burst
// wakes the runtime's monitor thread (sysmon), which had gone to sleep
// because every P was idle; awake again, it polls every 20 µs until the
// process is idle again, and it hands the P to another thread when a
// write to loopback (which runs the receiver's TCP stack) takes longer
// than its tick. On the data-plane benchmark that monitor thread and the
// hand-offs were about a fifth of a sidecar's CPU time.
//
// The sockets are non-blocking (the net package makes them so), so read
// and write return at once, with data or EAGAIN: nothing the scheduler
// must work around. Waiting for readiness, deadlines and close still go
// through the net package's poller (syscall.RawConn), exactly as for its
// own reads and writes; only the system calls themselves are raw.
package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// maxRW bounds one system call, like the net package's own reads and
// writes.
const maxRW = 1 << 30

// Conn is a TCP connection whose reads and writes are raw system calls.
// Everything else (deadlines, addresses, CloseWrite, SyscallConn, ...) is
// the *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// One read and one write may run at once; each direction's
	// arguments and results live here for its callback, which is made
	// once (no allocation per call).
	rmu     sync.Mutex
	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	readFn  func(uintptr) bool
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(uintptr) bool
}

// Wrap returns c with raw reads and writes when it is a *net.TCPConn,
// else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	x := &Conn{TCPConn: tc, rc: rc}
	x.readFn = x.read
	x.writeFn = x.write
	return x
}

// Unwrap returns the TCP connection of c when c came from Wrap, else c.
func Unwrap(c net.Conn) net.Conn {
	if x, ok := c.(*Conn); ok {
		return x.TCPConn
	}
	return c
}

// Read reads like (*net.TCPConn).Read: at most len(b) bytes once some
// are there, io.EOF at the end of the stream, *net.OpError otherwise.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) > maxRW {
		b = b[:maxRW]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = b, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("read", err)
	case errno != 0:
		return n, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait for the poller
		}
		c.rerr = e
		return true
	}
}

// Write writes all of b like (*net.TCPConn).Write, waiting for the socket
// to drain when its buffer is full.
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		p := c.wbuf[c.wn:]
		if len(p) > maxRW {
			p = p[:maxRW]
		}
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait for the poller
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// opError reports err as the net package would for op: the poller's
// errors (deadline exceeded, closed) keep their identity for errors.Is
// and net.Error's Timeout.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // the poller's error, wrapped by RawConn as "raw-read"/"raw-write"
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
