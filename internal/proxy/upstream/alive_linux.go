package upstream

import (
	"syscall"
	"unsafe"
)

// rawAlive peeks at an idle connection without blocking: pending bytes
// (nothing is expected between responses) or end of stream mean the
// connection cannot carry another request. The peek is a raw system
// call, like the connection's reads and writes (internal/proxy/rawio):
// it never blocks and need not wake the scheduler's monitor thread.
func rawAlive(rc syscall.RawConn) bool {
	alive := false
	err := rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		alive = e == syscall.EAGAIN || e == syscall.EWOULDBLOCK
	})
	return alive && err == nil
}
