//go:build linux

package capture

import (
	"errors"
	"fmt"
	"net"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// InboundPassthroughIPv6 is the IPv6 source the proxy uses to reach the app
// (the IPv4 one, 127.0.0.6, is always a local address): it must be on lo.
var InboundPassthroughIPv6 = net.ParseIP("::6")

// addPassthroughAddr adds ::6/128 to lo in the namespace open as netnsFD
// (0: the current one); an existing address is fine.
func addPassthroughAddr(netnsFD int) error {
	lo, err := loIndex(netnsFD)
	if err != nil {
		return err
	}
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return fmt.Errorf("opening rtnetlink: %w", err)
	}
	defer conn.Close()
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_LOCAL, InboundPassthroughIPv6.To16())
	ae.Bytes(unix.IFA_ADDRESS, InboundPassthroughIPv6.To16())
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	// struct ifaddrmsg: family, prefixlen, flags, scope, index (u32).
	msg := []byte{unix.AF_INET6, 128, unix.IFA_F_NODAD, unix.RT_SCOPE_HOST, 0, 0, 0, 0}
	nativeEndianPutUint32(msg[4:], uint32(lo))
	_, err = conn.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWADDR, Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
		Data:   append(msg, attrs...),
	})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding %s to lo: %w", InboundPassthroughIPv6, err)
	}
	return nil
}

// loIndex returns the index of lo in the namespace (always 1 on Linux, but
// asked rather than assumed).
func loIndex(netnsFD int) (int, error) {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return 0, fmt.Errorf("opening rtnetlink: %w", err)
	}
	defer conn.Close()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, "lo")
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	ifinfo := make([]byte, unix.SizeofIfInfomsg)
	ifinfo[0] = unix.AF_UNSPEC
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data:   append(ifinfo, attrs...),
	})
	if err != nil {
		return 0, fmt.Errorf("looking up lo: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) >= unix.SizeofIfInfomsg {
			return int(nativeEndianUint32(m.Data[4:8])), nil
		}
	}
	return 0, errors.New("no lo interface")
}
