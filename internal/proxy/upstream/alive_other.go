//go:build !linux

package upstream

import "syscall"

// rawAlive cannot peek without blocking here: idle connections are
// assumed alive (a request on a closed one fails and, without a body, is
// sent again on a new connection).
func rawAlive(syscall.RawConn) bool { return true }
