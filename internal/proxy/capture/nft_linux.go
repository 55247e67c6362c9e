//go:build linux

package capture

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Install programs the rules of c (both families) into the current network
// namespace, and puts the IPv6 inbound passthrough address ::6 on lo.
func Install(c *Config) error {
	if err := install(c); err != nil {
		return err
	}
	return addPassthroughAddr(0)
}

// InstallNetNS does what Install does in the network namespace open as fd
// (e.g. /var/run/netns/<name>).
func InstallNetNS(c *Config, fd int) error {
	if err := install(c, nftables.WithNetNSFd(fd)); err != nil {
		return err
	}
	return addPassthroughAddr(fd)
}

// Uninstall removes the tables Install created, if any, from the current
// network namespace.
func Uninstall() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	if err := deleteOwn(conn); err != nil {
		return err
	}
	return conn.Flush()
}

func deleteOwn(conn *nftables.Conn) error {
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		tables, err := conn.ListTablesOfFamily(fam)
		if err != nil {
			return fmt.Errorf("listing nftables tables: %w", err)
		}
		for _, t := range tables {
			if t.Name == TableName {
				conn.DelTable(t)
			}
		}
	}
	return nil
}

// install replaces this package's tables in one netlink batch, which the
// kernel applies atomically: a re-run never leaves a half-programmed pod.
func install(c *Config, opts ...nftables.ConnOption) error {
	conn, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	if err := deleteOwn(conn); err != nil {
		return err
	}
	for _, f := range []Family{IPv4, IPv6} {
		addTable(conn, plan(c, f))
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("installing nftables rules: %w", err)
	}
	return nil
}

func addTable(conn *nftables.Conn, t table) {
	fam := nftables.TableFamilyIPv4
	if t.family == IPv6 {
		fam = nftables.TableFamilyIPv6
	}
	nt := conn.AddTable(&nftables.Table{Name: TableName, Family: fam})
	chains := map[string]*nftables.Chain{}
	for _, ch := range t.chains {
		nc := &nftables.Chain{Name: ch.name, Table: nt}
		switch ch.hook {
		case hookPrerouting:
			nc.Type, nc.Hooknum, nc.Priority = nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest
		case hookOutput:
			nc.Type, nc.Hooknum, nc.Priority = nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest
		}
		if ch.hook != hookNone {
			accept := nftables.ChainPolicyAccept
			nc.Policy = &accept
		}
		chains[ch.name] = conn.AddChain(nc)
	}
	for _, ch := range t.chains {
		for _, r := range ch.rules {
			conn.AddRule(&nftables.Rule{Table: nt, Chain: chains[ch.name], Exprs: r.exprs(t.family)})
		}
	}
}

// exprs compiles a rule to nftables expressions, all using register 1.
func (r rule) exprs(f Family) []expr.Any {
	var out []expr.Any
	cmp := func(neg bool, data []byte) {
		op := expr.CmpOpEq
		if neg {
			op = expr.CmpOpNeq
		}
		out = append(out, &expr.Cmp{Op: op, Register: 1, Data: data})
	}
	for _, c := range r.conds {
		switch c.kind {
		case condTCP:
			out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
			cmp(c.neg, []byte{unix.IPPROTO_TCP})
		case condOifLo:
			out = append(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
			cmp(c.neg, ifname("lo"))
		case condSkUID:
			out = append(out, &expr.Meta{Key: expr.MetaKeySKUID, Register: 1})
			cmp(c.neg, binaryutil.NativeEndian.PutUint32(c.id))
		case condSkGID:
			out = append(out, &expr.Meta{Key: expr.MetaKeySKGID, Register: 1})
			cmp(c.neg, binaryutil.NativeEndian.PutUint32(c.id))
		case condDport:
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			cmp(c.neg, binaryutil.BigEndian.PutUint16(c.port))
		case condDaddr, condSaddr:
			var off, n uint32 = 16, 4 // IPv4 header: saddr at 12, daddr at 16
			if f == IPv6 {
				off, n = 24, 16 // IPv6 header: saddr at 8, daddr at 24
			}
			if c.kind == condSaddr {
				off -= n
			}
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
			if c.prefix.Bits() < int(n*8) {
				out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n,
					Mask: prefixMask(c.prefix.Bits(), int(n)), Xor: make([]byte, n)})
			}
			cmp(c.neg, c.prefix.Masked().Addr().AsSlice())
		}
	}
	switch r.verdict.kind {
	case verdictReturn:
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	case verdictJump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.verdict.chain})
	case verdictRedirect:
		port := make([]byte, 2)
		binary.BigEndian.PutUint16(port, r.verdict.port)
		out = append(out,
			&expr.Immediate{Register: 1, Data: port},
			&expr.Redir{RegisterProtoMin: 1})
	}
	return out
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func prefixMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func nativeEndianPutUint32(b []byte, v uint32) { copy(b, binaryutil.NativeEndian.PutUint32(v)) }

func nativeEndianUint32(b []byte) uint32 { return binaryutil.NativeEndian.Uint32(b) }
