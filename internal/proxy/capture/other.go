//go:build !linux

package capture

import (
	"errors"
	"net"
	"net/netip"
)

var errUnsupported = errors.New("traffic capture needs Linux")

// Install is only available on Linux.
func Install(*Config) error { return errUnsupported }

// InstallNetNS is only available on Linux.
func InstallNetNS(*Config, int) error { return errUnsupported }

// Uninstall is only available on Linux.
func Uninstall() error { return errUnsupported }

// OriginalDst is only available on Linux.
func OriginalDst(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errUnsupported }
