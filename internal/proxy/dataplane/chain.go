package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// chainRT is one built filter chain: how to match it, its transport and
// what serves the connection (an HTTP connection manager or a TCP proxy).
type chainRT struct {
	name     string
	listener string
	match    *listener.FilterChainMatch
	tls      *tlsServer // nil: plaintext
	hcm      *hcm
	tcp      *tcpProxy
}

// connFacts is what filter chain matching looks at.
type connFacts struct {
	dst, src  netip.AddrPort
	sni       string
	transport string // "tls" or "raw_buffer"
	alpn      []string
}

const (
	hcmFilter      = "envoy.filters.network.http_connection_manager"
	tcpProxyFilter = "envoy.filters.network.tcp_proxy"
	netRBACFilter  = "envoy.filters.network.rbac"
	statsFilter    = "istio.stats"
	tlsSocket      = "envoy.transport_sockets.tls"
	rawSocket      = "envoy.transport_sockets.raw_buffer"
)

func (d *Dataplane) buildChain(st, prev *state, lname string, idx int, fc *listener.FilterChain) (*chainRT, error) {
	c := &chainRT{name: fc.GetName(), listener: lname, match: fc.GetFilterChainMatch()}
	if err := checkMatch(c.match); err != nil {
		return nil, err
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		switch ts.GetName() {
		case tlsSocket:
			ctx := &tlsv3.DownstreamTlsContext{}
			if err := anyTo(ts.GetTypedConfig(), ctx); err != nil {
				return nil, fmt.Errorf("transport socket: %w", err)
			}
			t, err := d.buildTLS(st.snap, ctx)
			if err != nil {
				return nil, fmt.Errorf("transport socket: %w", err)
			}
			c.tls = t
		case rawSocket, "":
		default:
			return nil, fmt.Errorf("transport socket %q is not supported", ts.GetName())
		}
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, fmt.Errorf("no network filters")
	}
	var netRBAC []*rbac.Engine
	var tcpStats *statsConfig
	for i, f := range filters {
		last := i == len(filters)-1
		switch f.GetName() {
		case hcmFilter:
			if !last {
				return nil, fmt.Errorf("%s must be the last filter", hcmFilter)
			}
			cfg := &hcmv3.HttpConnectionManager{}
			if err := anyTo(f.GetTypedConfig(), cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", hcmFilter, err)
			}
			key := fmt.Sprintf("%s/%d/%s", lname, idx, fc.GetName())
			if prev != nil {
				if old := prev.hcms[key]; old != nil && proto.Equal(old.cfg, cfg) && old.tlsTerminated == (c.tls != nil) {
					c.hcm = old
					st.hcms[key] = old
					st.servers[key] = old.server
					continue
				}
			}
			h, err := d.newHCM(st, key, cfg, c.tls != nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", hcmFilter, err)
			}
			c.hcm = h
			st.hcms[key] = h
		case tcpProxyFilter:
			if !last {
				return nil, fmt.Errorf("%s must be the last filter", tcpProxyFilter)
			}
			cfg := &tcpv3.TcpProxy{}
			if err := anyTo(f.GetTypedConfig(), cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", tcpProxyFilter, err)
			}
			t, err := d.newTCPProxy(cfg, netRBAC, tcpStats)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tcpProxyFilter, err)
			}
			c.tcp = t
		case netRBACFilter:
			cfg := &rbacnet.RBAC{}
			if err := anyTo(f.GetTypedConfig(), cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", netRBACFilter, err)
			}
			e, err := rbac.Compile(cfg.GetRules(), cfg.GetShadowRules(), rbac.Network)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", netRBACFilter, err)
			}
			netRBAC = append(netRBAC, e)
		case statsFilter:
			sc, err := parseStatsConfig(f.GetTypedConfig())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", statsFilter, err)
			}
			tcpStats = sc
		default:
			return nil, fmt.Errorf("network filter %q is not supported", f.GetName())
		}
	}
	if c.hcm == nil && c.tcp == nil {
		return nil, fmt.Errorf("chain ends in neither %s nor %s", hcmFilter, tcpProxyFilter)
	}
	return c, nil
}

func anyTo(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return fmt.Errorf("typed_config is missing")
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config %s: %w", a.GetTypeUrl(), err)
	}
	return nil
}

func checkMatch(m *listener.FilterChainMatch) error {
	if m == nil {
		return nil
	}
	if m.GetAddressSuffix() != "" || m.GetSuffixLen() != nil {
		return fmt.Errorf("address_suffix is not supported")
	}
	switch m.GetTransportProtocol() {
	case "", "tls", "raw_buffer":
	default:
		return fmt.Errorf("transport_protocol %q is not supported", m.GetTransportProtocol())
	}
	for _, r := range append(append(append([]*core.CidrRange{}, m.GetPrefixRanges()...), m.GetSourcePrefixRanges()...), m.GetDirectSourcePrefixRanges()...) {
		if _, err := cidr(r); err != nil {
			return err
		}
	}
	return nil
}

func cidr(r *core.CidrRange) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %q: %w", r.GetAddressPrefix(), err)
	}
	bits := ip.BitLen()
	if r.GetPrefixLen() != nil {
		bits = int(r.GetPrefixLen().GetValue())
	}
	p, err := ip.Unmap().Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %s/%d: %w", r.GetAddressPrefix(), bits, err)
	}
	return p, nil
}

// peekNeeds says what a listener must look at before choosing a chain.
type peekNeeds struct {
	tls  bool // transport protocol, SNI or ALPN
	http bool // sniff plaintext HTTP for application_protocols
}

func (p *peekNeeds) add(m *listener.FilterChainMatch) {
	if m.GetTransportProtocol() != "" || len(m.GetServerNames()) > 0 || len(m.GetApplicationProtocols()) > 0 {
		p.tls = true
	}
	if len(m.GetApplicationProtocols()) > 0 && m.GetTransportProtocol() != "tls" {
		p.http = true
	}
}

// selectChain picks the filter chain for a connection the way Envoy does:
// criteria in a fixed order, and at each step the chains that name a value
// matching the connection win over those that leave it open; the most
// specific value (longest prefix, exact server name) wins among them.
func selectChain(chains []*chainRT, def *chainRT, f connFacts) *chainRT {
	cands := chains
	steps := []func([]*chainRT) []*chainRT{
		func(cs []*chainRT) []*chainRT { // destination_port
			return narrow(cs, func(m *listener.FilterChainMatch) (bool, int, bool) {
				if m.GetDestinationPort() == nil {
					return false, 0, false
				}
				return true, 0, m.GetDestinationPort().GetValue() == uint32(f.dst.Port())
			})
		},
		func(cs []*chainRT) []*chainRT { // prefix_ranges (destination IP)
			return narrow(cs, prefixCriterion(func(m *listener.FilterChainMatch) []*core.CidrRange { return m.GetPrefixRanges() }, f.dst.Addr()))
		},
		func(cs []*chainRT) []*chainRT { // server_names
			return narrow(cs, func(m *listener.FilterChainMatch) (bool, int, bool) {
				if len(m.GetServerNames()) == 0 {
					return false, 0, false
				}
				best, ok := 0, false
				for _, n := range m.GetServerNames() {
					if s, hit := serverNameScore(n, f.sni); hit && (!ok || s > best) {
						best, ok = s, true
					}
				}
				return true, best, ok
			})
		},
		func(cs []*chainRT) []*chainRT { // transport_protocol
			return narrow(cs, func(m *listener.FilterChainMatch) (bool, int, bool) {
				if m.GetTransportProtocol() == "" {
					return false, 0, false
				}
				return true, 0, m.GetTransportProtocol() == f.transport
			})
		},
		func(cs []*chainRT) []*chainRT { // application_protocols
			// Like Envoy, the client's order decides between chains
			// that both match: the first protocol it offers that some
			// chain lists wins (a mesh client offering
			// "istio-http/1.1, istio" reaches the HTTP chain of a port
			// whose protocol is sniffed, not its TCP chain).
			return narrow(cs, func(m *listener.FilterChainMatch) (bool, int, bool) {
				if len(m.GetApplicationProtocols()) == 0 {
					return false, 0, false
				}
				for i, got := range f.alpn {
					if slices.Contains(m.GetApplicationProtocols(), got) {
						return true, len(f.alpn) - i, true
					}
				}
				return true, 0, false
			})
		},
		func(cs []*chainRT) []*chainRT { // direct_source_prefix_ranges
			return narrow(cs, prefixCriterion(func(m *listener.FilterChainMatch) []*core.CidrRange { return m.GetDirectSourcePrefixRanges() }, f.src.Addr()))
		},
		func(cs []*chainRT) []*chainRT { // source_type
			return narrow(cs, func(m *listener.FilterChainMatch) (bool, int, bool) {
				switch m.GetSourceType() {
				case listener.FilterChainMatch_SAME_IP_OR_LOOPBACK:
					return true, 0, f.src.Addr().IsLoopback() || f.src.Addr() == f.dst.Addr()
				case listener.FilterChainMatch_EXTERNAL:
					return true, 0, !(f.src.Addr().IsLoopback() || f.src.Addr() == f.dst.Addr())
				}
				return false, 0, false
			})
		},
		func(cs []*chainRT) []*chainRT { // source_prefix_ranges
			return narrow(cs, prefixCriterion(func(m *listener.FilterChainMatch) []*core.CidrRange { return m.GetSourcePrefixRanges() }, f.src.Addr()))
		},
		func(cs []*chainRT) []*chainRT { // source_ports
			return narrow(cs, func(m *listener.FilterChainMatch) (bool, int, bool) {
				if len(m.GetSourcePorts()) == 0 {
					return false, 0, false
				}
				for _, p := range m.GetSourcePorts() {
					if p == uint32(f.src.Port()) {
						return true, 0, true
					}
				}
				return true, 0, false
			})
		},
	}
	for _, step := range steps {
		cands = step(cands)
		if len(cands) == 0 {
			return def
		}
	}
	return cands[0]
}

// narrow keeps the chains whose criterion is set and matches (only the
// best-scoring ones), or, when none does, the chains that leave it unset.
func narrow(cs []*chainRT, crit func(*listener.FilterChainMatch) (set bool, score int, ok bool)) []*chainRT {
	var hits, open []*chainRT
	best := -1
	for _, c := range cs {
		set, score, ok := crit(c.match)
		switch {
		case !set:
			open = append(open, c)
		case ok && score > best:
			best = score
			hits = append(hits[:0], c)
		case ok && score == best:
			hits = append(hits, c)
		}
	}
	if len(hits) > 0 {
		return hits
	}
	return open
}

func prefixCriterion(get func(*listener.FilterChainMatch) []*core.CidrRange, ip netip.Addr) func(*listener.FilterChainMatch) (bool, int, bool) {
	ip = ip.Unmap()
	return func(m *listener.FilterChainMatch) (bool, int, bool) {
		rs := get(m)
		if len(rs) == 0 {
			return false, 0, false
		}
		best, ok := -1, false
		for _, r := range rs {
			p, err := cidr(r)
			if err == nil && p.Contains(ip) && p.Bits() > best {
				best, ok = p.Bits(), true
			}
		}
		return true, best, ok
	}
}

// serverNameScore matches an SNI against a chain's server name: exact
// names score highest, then wildcards ("*.example.com") by length.
func serverNameScore(pattern, sni string) (int, bool) {
	sni = strings.ToLower(sni)
	pattern = strings.ToLower(pattern)
	if sni == "" {
		return 0, false
	}
	if pattern == sni {
		return 1 << 20, true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok && strings.HasSuffix(sni, suffix) && len(sni) > len(suffix) {
		return len(suffix), true
	}
	return 0, false
}
