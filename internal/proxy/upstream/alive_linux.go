package upstream

import "syscall"

// rawAlive peeks at an idle connection without blocking: pending bytes
// (nothing is expected between responses) or end of stream mean the
// connection cannot carry another request.
func rawAlive(rc syscall.RawConn) bool {
	alive := false
	var b [1]byte
	err := rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true
	})
	return alive && err == nil
}
