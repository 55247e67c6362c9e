package upstream

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// lookupNetIP resolves names for STRICT_DNS clusters (replaced in tests).
var lookupNetIP = net.DefaultResolver.LookupNetIP

const defaultDNSRefresh = 5 * time.Second

// dnsResolver keeps the hosts of a STRICT_DNS cluster: one host per
// address each hostname resolves to, re-resolved every dns_refresh_rate.
// An endpoint that never resolved is dialled by name.
type dnsResolver struct {
	c       *Cluster
	fixed   []*Host // endpoints given as IP addresses
	targets []*Host // endpoints given as hostnames (templates)
	family  string
	refresh time.Duration

	mu    sync.Mutex
	last  map[*Host][]*Host // per target, the latest resolution
	hosts []*Host
	stop  chan struct{}
	once  sync.Once
}

func newDNSResolver(c *Cluster, msg *clusterv3.Cluster, hosts []*Host, prev []*Host) *dnsResolver {
	r := &dnsResolver{c: c, family: "ip", refresh: defaultDNSRefresh, last: map[*Host][]*Host{}, stop: make(chan struct{})}
	switch msg.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		r.family = "ip4"
	case clusterv3.Cluster_V6_ONLY:
		r.family = "ip6"
	}
	if d := msg.GetDnsRefreshRate(); d != nil && d.AsDuration() > 0 {
		r.refresh = d.AsDuration()
	}
	for _, h := range hosts {
		if h.Hostname != "" {
			r.targets = append(r.targets, h)
		} else {
			r.fixed = append(r.fixed, h)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(c.cfg.connectTimeout, 5*time.Second))
	defer cancel()
	r.resolve(ctx, prev)
	go r.loop()
	return r
}

func (r *dnsResolver) current() []*Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hosts
}

func (r *dnsResolver) loop() {
	t := time.NewTicker(r.refresh)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), r.refresh)
			r.resolve(ctx, r.current())
			cancel()
		}
	}
}

func (r *dnsResolver) close() { r.once.Do(func() { close(r.stop) }) }

// resolve refreshes the host list; live state is kept for addresses that
// remain (matched against prev).
func (r *dnsResolver) resolve(ctx context.Context, prev []*Host) {
	states := map[string]*hostState{}
	for _, h := range prev {
		states[hostKey(h)] = h.state
	}
	hosts := append([]*Host(nil), r.fixed...)
	for _, tmpl := range r.targets {
		ips, err := lookupNetIP(ctx, r.family, tmpl.Hostname)
		r.mu.Lock()
		resolved, had := r.last[tmpl]
		r.mu.Unlock()
		if err != nil || len(ips) == 0 {
			if !had {
				resolved = []*Host{tmpl} // dial by name until it resolves
			}
			r.c.log.Debug("dns resolution failed", "host", tmpl.Hostname, "error", err)
		} else {
			resolved = resolved[:0:0]
			seen := map[netip.Addr]bool{}
			for _, ip := range ips {
				ip = ip.Unmap()
				if seen[ip] {
					continue
				}
				seen[ip] = true
				h := *tmpl
				h.Hostname, h.DNSName = "", tmpl.Hostname
				h.Addr = netip.AddrPortFrom(ip, tmpl.Port)
				h.freeze()
				if hs := states[hostKey(&h)]; hs != nil {
					h.state = hs
				} else {
					h.state = &hostState{}
					h.state.ensurePool(r.c, &h)
				}
				resolved = append(resolved, &h)
			}
		}
		r.mu.Lock()
		r.last[tmpl] = resolved
		r.mu.Unlock()
		hosts = append(hosts, resolved...)
	}
	r.mu.Lock()
	old := r.hosts
	r.hosts = hosts
	r.mu.Unlock()
	// Addresses that went away: close their idle connections.
	kept := map[*hostState]bool{}
	for _, h := range hosts {
		kept[h.state] = true
	}
	for _, h := range old {
		if !kept[h.state] {
			h.state.pool.closeIdle()
		}
	}
}
