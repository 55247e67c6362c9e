package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// state is one applied snapshot, fully built. It is immutable once
// published; connections and requests read the current one.
type state struct {
	snap      *config.Snapshot
	upstreams Upstreams
	routes    map[string]Routes              // RDS route tables by name
	listeners map[string]*listenerRT         // by name
	byAddr    map[netip.AddrPort]*listenerRT // every listener by its configured address
	bound     map[netip.AddrPort]*listenerRT // listeners that own a socket, by effective address
	hcms      map[string]*hcm                // connection manager configurations by listener/chain key
	servers   map[string]*hcmServer          // their servers, by the same key
	// prevServers are the previous state's servers, while building.
	prevServers map[string]*hcmServer
}

type listenerRT struct {
	name           string
	addr           netip.AddrPort // as configured
	useOriginalDst bool
	// restoreDst: read the connection's original destination (captured
	// traffic) for chain matching: use_original_dst, the original_dst
	// listener filter, or an INBOUND listener (virtualInbound), which
	// matches chains by the workload's port.
	restoreDst   bool
	chains       []*chainRT
	defaultChain *chainRT
	peek         peekNeeds
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }

func marshalIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

// build constructs the state of snap. It has no side effects: nothing is
// bound or started until the caller commits.
func (d *Dataplane) build(snap *config.Snapshot, prev *state) (*state, error) {
	st := &state{
		snap:      snap,
		routes:    map[string]Routes{},
		listeners: map[string]*listenerRT{},
		byAddr:    map[netip.AddrPort]*listenerRT{},
		bound:     map[netip.AddrPort]*listenerRT{},
		hcms:      map[string]*hcm{},
		servers:   map[string]*hcmServer{},
	}
	if prev != nil {
		st.prevServers = prev.servers
	}
	defer func() { st.prevServers = nil }()
	var prevUp Upstreams
	if prev != nil {
		prevUp = prev.upstreams
	}
	up, err := d.opts.Engine.BuildUpstreams(snap, prevUp, d.opts.Secrets, d.log)
	if err != nil {
		return nil, err
	}
	st.upstreams = up
	fail := func(err error) (*state, error) {
		st.discard(prev)
		return nil, err
	}
	for _, name := range keys(snap.Routes) {
		rt, err := d.opts.Engine.CompileRoutes(snap.Routes[name])
		if err != nil {
			return fail(fmt.Errorf("route %s: %w", name, err))
		}
		st.routes[name] = rt
	}
	for _, name := range keys(snap.Listeners) {
		l := snap.Listeners[name]
		lrt, err := d.buildListener(st, prev, l)
		if err != nil {
			return fail(fmt.Errorf("listener %s: %w", name, err))
		}
		st.listeners[name] = lrt
		if other, dup := st.byAddr[lrt.addr]; dup {
			return fail(fmt.Errorf("listener %s: address %s is also listener %s's", name, lrt.addr, other.name))
		}
		st.byAddr[lrt.addr] = lrt
		if l.GetBindToPort() == nil || l.GetBindToPort().GetValue() {
			eff := d.effectiveAddr(lrt.addr)
			if other, dup := st.bound[eff]; dup {
				return fail(fmt.Errorf("listener %s: binds %s like listener %s", name, eff, other.name))
			}
			st.bound[eff] = lrt
		}
	}
	return st, nil
}

func (d *Dataplane) effectiveAddr(a netip.AddrPort) netip.AddrPort {
	if d.opts.BindAddress != "" && a.Addr().IsUnspecified() {
		if ip, err := netip.ParseAddr(d.opts.BindAddress); err == nil {
			return netip.AddrPortFrom(ip, a.Port())
		}
	}
	return a
}

func socketAddress(a *core.Address) (netip.AddrPort, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return netip.AddrPort{}, fmt.Errorf("address must be a socket address")
	}
	if sa.GetProtocol() != core.SocketAddress_TCP {
		return netip.AddrPort{}, fmt.Errorf("protocol %s is not supported", sa.GetProtocol())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", sa.GetAddress(), err)
	}
	port, ok := sa.GetPortSpecifier().(*core.SocketAddress_PortValue)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("named ports are not supported")
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port.PortValue)), nil
}

func (d *Dataplane) buildListener(st, prev *state, l *listener.Listener) (*listenerRT, error) {
	addr, err := socketAddress(l.GetAddress())
	if err != nil {
		return nil, err
	}
	if l.GetFilterChainMatcher() != nil {
		return nil, fmt.Errorf("filter_chain_matcher is not supported")
	}
	if len(l.GetListenerFilters()) > 0 {
		// Listener filters (tls_inspector, http_inspector, original_dst)
		// are what this data plane does by itself; accept the known ones.
		for _, f := range l.GetListenerFilters() {
			switch f.GetName() {
			case "envoy.filters.listener.tls_inspector", "envoy.filters.listener.http_inspector",
				"envoy.filters.listener.original_dst":
			default:
				return nil, fmt.Errorf("listener filter %q is not supported", f.GetName())
			}
		}
	}
	lrt := &listenerRT{
		name:           l.GetName(),
		addr:           addr,
		useOriginalDst: l.GetUseOriginalDst().GetValue(),
	}
	lrt.restoreDst = lrt.useOriginalDst || l.GetTrafficDirection() == core.TrafficDirection_INBOUND
	for _, f := range l.GetListenerFilters() {
		if f.GetName() == "envoy.filters.listener.original_dst" {
			lrt.restoreDst = true
		}
	}
	for i, fc := range l.GetFilterChains() {
		c, err := d.buildChain(st, prev, l.GetName(), i, fc)
		if err != nil {
			return nil, fmt.Errorf("filter chain %s: %w", chainLabel(i, fc), err)
		}
		lrt.chains = append(lrt.chains, c)
		lrt.peek.add(fc.GetFilterChainMatch())
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		c, err := d.buildChain(st, prev, l.GetName(), -1, fc)
		if err != nil {
			return nil, fmt.Errorf("default filter chain: %w", err)
		}
		lrt.defaultChain = c
	}
	if err := checkChainsDistinct(lrt.chains); err != nil {
		return nil, err
	}
	return lrt, nil
}

func chainLabel(i int, fc *listener.FilterChain) string {
	if fc.GetName() != "" {
		return fmt.Sprintf("%d (%s)", i, fc.GetName())
	}
	return fmt.Sprint(i)
}

// checkChainsDistinct refuses two chains with the same match, which Envoy
// rejects too.
func checkChainsDistinct(chains []*chainRT) error {
	for i := range chains {
		for j := i + 1; j < len(chains); j++ {
			if proto.Equal(chains[i].match, chains[j].match) {
				return fmt.Errorf("filter chains %d and %d have the same match", i, j)
			}
		}
	}
	return nil
}

// discard drops what build made for a state that was never committed:
// new servers, tracers of new configurations and the new upstream set.
func (st *state) discard(prev *state) {
	for k, srv := range st.servers {
		if prev != nil && prev.servers[k] == srv {
			continue
		}
		srv.close()
	}
	for k, h := range st.hcms {
		if prev != nil && prev.hcms[k] == h {
			continue
		}
		h.closeTracer(0)
	}
	if st.upstreams != nil && (prev == nil || st.upstreams != prev.upstreams) {
		// The previous set stays in use: release only what it does
		// not share with the discarded one.
		var keep Upstreams
		if prev != nil {
			keep = prev.upstreams
		}
		st.upstreams.Release(keep)
	}
}

// start starts the servers that are new in st.
func (st *state) start() {
	for _, srv := range st.servers {
		srv.start()
	}
}

// activate points kept servers at their new configurations; called once
// st is the current state.
func (st *state) activate() {
	for k, srv := range st.servers {
		srv.cur.Store(st.hcms[k])
	}
}

// retire gracefully stops what next does not keep: servers (in-flight
// requests finish, idle connections close) and configurations' tracers.
func (st *state) retire(next *state) {
	for k, srv := range st.servers {
		if next.servers[k] == srv {
			continue
		}
		if n := next.servers[k]; n != nil {
			srv.next.Store(n)
		}
		// Stop keep-alive first: responses in flight now say
		// "Connection: close" and idle connections close, while a
		// connection whose first request is still on its way is served
		// rather than dropped (net/http's Shutdown drops a request read
		// after it started). Shut down after a grace period.
		srv.ln.Close()
		srv.srv.SetKeepAlivesEnabled(false)
		go func() {
			time.Sleep(replaceGrace)
			ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			_ = srv.shutdown(ctx)
			srv.close()
		}()
	}
	for k, h := range st.hcms {
		if next.hcms[k] != h {
			h.closeTracer(drainTimeout)
		}
	}
}

// drainTimeout bounds how long a replaced connection manager waits for its
// in-flight requests before closing them.
const drainTimeout = 30 * time.Second

// replaceGrace is how long a replaced HTTP server keeps serving
// connections it already accepted before it shuts down.
const replaceGrace = 2 * time.Second
