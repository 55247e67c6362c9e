package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/mizzen-mesh/mizzen/internal/proxy/capture"
	"github.com/mizzen-mesh/mizzen/internal/proxy/rawio"
)

// socket is one bound address. It survives snapshots that keep a listener
// at its address: the accept loop reads the current state for each
// connection.
type socket struct {
	addr netip.AddrPort
	ln   net.Listener
}

func listen(addr netip.AddrPort) (*socket, error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return &socket{addr: addr, ln: ln}, nil
}

func (d *Dataplane) accept(s *socket) {
	defer d.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			d.log.Warn("accept failed", "address", s.addr, "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go d.handle(s.addr, c)
	}
}

// connInfo is what is known about a downstream connection; requests read
// it from their context.
type connInfo struct {
	listener  string
	chain     *chainRT
	src, dst  netip.AddrPort
	local     netip.AddrPort
	sni       string
	tls       *tls.ConnectionState
	principal string // peer SPIFFE ID when mTLS
	start     time.Time
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// handle dispatches one accepted connection: original destination
// hand-off, filter chain selection, TLS, then the chain's HCM or TCP proxy.
func (d *Dataplane) handle(sock netip.AddrPort, c net.Conn) {
	st := d.cur.Load()
	l := st.bound[sock]
	if l == nil {
		c.Close()
		return
	}
	info := &connInfo{
		listener: l.name,
		src:      addrPort(c.RemoteAddr()),
		local:    addrPort(c.LocalAddr()),
		start:    time.Now(),
	}
	info.dst = info.local
	if l.restoreDst {
		od, err := d.opts.OriginalDst(c)
		switch {
		case err != nil:
			d.log.Debug("no original destination", "listener", l.name, "error", err)
		case l.useOriginalDst:
			info.dst = od
			if t := st.byAddr[od]; t != nil && t != l {
				l = t
			} else if t := st.byAddr[netip.AddrPortFrom(netip.IPv4Unspecified(), od.Port())]; t != nil && t != l {
				l = t
			}
		default:
			info.dst = od
		}
		info.listener = l.name
	}
	c = rawio.Wrap(c)
	bc := newBufConn(c)
	facts := connFacts{dst: info.dst, src: info.src, transport: "raw_buffer"}
	if l.peek.tls || l.peek.http {
		_ = c.SetReadDeadline(time.Now().Add(peekTimeout))
		isTLS, sni, alpn := sniffTLS(bc)
		if isTLS {
			facts.transport, facts.sni, facts.alpn = "tls", sni, alpn
		} else if l.peek.http {
			if p := sniffHTTP(bc); p != "" {
				facts.alpn = []string{p}
			}
		}
		_ = c.SetReadDeadline(time.Time{})
	}
	info.sni = facts.sni
	chain := selectChain(l.chains, l.defaultChain, facts)
	if chain == nil {
		d.log.Debug("no filter chain matched; closing", "listener", l.name, "source", info.src, "destination", info.dst, "transport", facts.transport, "sni", facts.sni)
		c.Close()
		return
	}
	info.chain = chain
	var conn net.Conn = bc
	if chain.tls != nil {
		tc := tls.Server(bc, chain.tls.cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			d.log.Debug("tls handshake failed", "listener", l.name, "source", info.src, "error", err)
			c.Close()
			return
		}
		cs := tc.ConnectionState()
		info.tls = &cs
		info.principal = spiffeID(&cs)
		conn = tc
	}
	switch {
	case chain.hcm != nil:
		chain.hcm.server.serve(conn, info)
	case chain.tcp != nil:
		d.proxyTCP(chain.tcp, conn, info, st)
	}
}

// originalDst reads the original destination (SO_ORIGINAL_DST) of a
// captured TCP connection, with internal/proxy/capture (IPv4, IPv6 and
// IPv4 on a dual-stack listener).
func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a tcp connection")
	}
	return capture.OriginalDst(tc)
}
