package upstream

import (
	"syscall"
	"unsafe"
)

// peeker looks at an idle connection without blocking: pending bytes
// (nothing is expected between responses) or end of stream mean the
// connection cannot carry another request. The peek is a raw system
// call, like the connection's reads and writes (internal/proxy/rawio):
// it never blocks and need not wake the scheduler's monitor thread. One
// peeker is made per connection, so a check allocates nothing.
type peeker struct {
	rc    syscall.RawConn
	alive bool
	fn    func(fd uintptr)
}

func newPeeker(rc syscall.RawConn) *peeker {
	p := &peeker{rc: rc}
	p.fn = p.peek
	return p
}

func (p *peeker) peek(fd uintptr) {
	var b [1]byte
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	p.alive = e == syscall.EAGAIN || e == syscall.EWOULDBLOCK
}

// check reports whether the connection is open with nothing to read; the
// caller owns the connection.
func (p *peeker) check() bool {
	p.alive = false
	err := p.rc.Control(p.fn)
	return p.alive && err == nil
}
