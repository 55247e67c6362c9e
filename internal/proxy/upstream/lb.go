package upstream

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// balancer picks among candidate hosts (healthy, not ejected, not excluded).
type balancer interface {
	pick(c *Cluster, cands []*Host, opts RequestOptions) *Host
}

func newBalancer(cfg *clusterConfig) balancer {
	switch cfg.lbPolicy {
	case clusterv3.Cluster_LEAST_REQUEST:
		return leastRequest{}
	case clusterv3.Cluster_RANDOM:
		return random{}
	case clusterv3.Cluster_RING_HASH:
		return &hashBalancer{build: func(hs []*Host) hashTable { return newRing(hs, cfg.ringSize) }}
	case clusterv3.Cluster_MAGLEV:
		return &hashBalancer{build: func(hs []*Host) hashTable { return newMaglev(hs, cfg.maglevSize) }}
	}
	return roundRobin{}
}

// pick chooses a host for one request or connection.
func (c *Cluster) pick(opts RequestOptions) (*Host, error) {
	if c.cfg.typ == clusterv3.Cluster_ORIGINAL_DST {
		return c.originalDst(opts)
	}
	now := c.now()
	outlier := c.cfg.outlier != nil
	all := c.allHosts()
	var cands []*Host
	if eligible := func(h *Host) bool { return h.healthy && (!outlier || !h.Ejected(now)) }; allOf(all, eligible) {
		cands = all // the usual case: no copy (the balancers only read it)
	} else {
		cands = make([]*Host, 0, len(all))
		for _, h := range all {
			if eligible(h) {
				cands = append(cands, h)
			}
		}
	}
	// Panic mode: below healthy_panic_threshold, balance over every host.
	if len(all) > 0 && 100*float64(len(cands))/float64(len(all)) < c.cfg.panicThreshold {
		cands = all
	} else {
		cands = c.byPriority(all, cands)
	}
	if len(cands) == 0 {
		return nil, ErrNoHealthyUpstream
	}
	if len(opts.PreviousHosts) > 0 {
		fresh := make([]*Host, 0, len(cands))
		for _, h := range cands {
			tried := false
			for _, p := range opts.PreviousHosts {
				if h.same(p) {
					tried = true
					break
				}
			}
			if !tried {
				fresh = append(fresh, h)
			}
		}
		if len(fresh) > 0 { // otherwise reuse a tried host, like Envoy after its attempts
			cands = fresh
		}
	}
	return c.lb.pick(c, cands, opts), nil
}

// overprovisioning is Envoy's default overprovisioning factor (1.4).
const overprovisioning = 140

// byPriority narrows the candidates to one priority level. Like Envoy, a
// level takes a share of the load equal to its health (healthy share ×
// 1.4, at most 100%), and what it cannot take spills to the next level.
func (c *Cluster) byPriority(all, cands []*Host) []*Host {
	if len(cands) == 0 || !c.multiPriority {
		return cands
	}
	total := map[uint32]int{}
	healthy := map[uint32][]*Host{}
	var levels []uint32
	for _, h := range all {
		if total[h.Priority] == 0 {
			levels = append(levels, h.Priority)
		}
		total[h.Priority]++
	}
	for _, h := range cands {
		healthy[h.Priority] = append(healthy[h.Priority], h)
	}
	sort.Slice(levels, func(i, j int) bool { return levels[i] < levels[j] })
	loads := make([]int, len(levels))
	remaining, sum := 100, 0
	for i, p := range levels {
		health := min(100, overprovisioning*len(healthy[p])/total[p])
		loads[i] = min(health, remaining)
		remaining -= loads[i]
		sum += loads[i]
	}
	if sum == 0 {
		return cands
	}
	n := c.state.randN(sum)
	for i, p := range levels {
		if n < loads[i] {
			return healthy[p]
		}
		n -= loads[i]
	}
	return cands
}

func allSamePriority(hs []*Host) bool {
	for _, h := range hs {
		if h.Priority != hs[0].Priority {
			return false
		}
	}
	return true
}

func (c *Cluster) originalDst(opts RequestOptions) (*Host, error) {
	if !opts.OriginalDst.IsValid() || opts.OriginalDst.Port() == 0 {
		return nil, ErrNoHealthyUpstream
	}
	dst := netip.AddrPortFrom(opts.OriginalDst.Addr().Unmap(), opts.OriginalDst.Port())
	h := &Host{Addr: dst, Port: dst.Port(), Weight: 1, healthy: true, socket: c.cfg.defaultSocket}
	h.freeze()
	now := c.now()
	c.state.origMu.Lock()
	if now.Sub(c.state.origSwept) >= c.cfg.cleanup {
		c.state.origSwept = now
		c.sweepOriginalDst(now)
	}
	hs := c.state.origDst[dst]
	if hs == nil {
		hs = &hostState{}
		hs.pool = newPool(c.cfg, c.state, dst.String(), h.socket)
		c.state.origDst[dst] = hs
	}
	hs.lastUsed.Store(now.UnixNano())
	c.state.origMu.Unlock()
	h.state = hs
	return h, nil
}

// sweepOriginalDst drops destinations unused for cleanup_interval and
// closes their idle connections. The caller holds origMu.
func (c *Cluster) sweepOriginalDst(now time.Time) {
	for dst, hs := range c.state.origDst {
		if hs.active.Load() == 0 && now.Sub(time.Unix(0, hs.lastUsed.Load())) >= c.cfg.cleanup {
			hs.pool.closeIdle()
			delete(c.state.origDst, dst)
		}
	}
}

type roundRobin struct{}

func (roundRobin) pick(c *Cluster, cands []*Host, _ RequestOptions) *Host {
	n := c.state.rr.Add(1) - 1
	var total uint64
	equal := true
	for _, h := range cands {
		total += uint64(h.Weight)
		if h.Weight != cands[0].Weight {
			equal = false
		}
	}
	if equal {
		return cands[n%uint64(len(cands))]
	}
	// Weighted: interleave by walking the hosts with a stride of the
	// counter over the total weight.
	pos := n % total
	for _, h := range cands {
		if pos < uint64(h.Weight) {
			return h
		}
		pos -= uint64(h.Weight)
	}
	return cands[len(cands)-1]
}

type random struct{}

func (random) pick(c *Cluster, cands []*Host, _ RequestOptions) *Host {
	return cands[c.state.randN(len(cands))]
}

// leastRequest is power of two choices: of two random hosts, the one
// with fewer active requests.
type leastRequest struct{}

func (leastRequest) pick(c *Cluster, cands []*Host, _ RequestOptions) *Host {
	if len(cands) == 1 {
		return cands[0]
	}
	a := cands[c.state.randN(len(cands))]
	b := cands[c.state.randN(len(cands))]
	if b.ActiveRequests() < a.ActiveRequests() {
		return b
	}
	return a
}

// hashTable maps a hash to a host.
type hashTable interface {
	lookup(hash uint64) *Host
}

// hashBalancer is consistent hashing (ring hash or Maglev) over the
// candidate hosts; the table is rebuilt when the candidates (healthy, not
// ejected, not tried before) differ from the hosts it was built for.
type hashBalancer struct {
	build func([]*Host) hashTable

	mu    sync.Mutex
	key   string
	table hashTable
}

func (b *hashBalancer) pick(c *Cluster, cands []*Host, opts RequestOptions) *Host {
	if !opts.HasHash {
		return cands[c.state.randN(len(cands))]
	}
	key := hostsKey(cands)
	b.mu.Lock()
	if b.table == nil || b.key != key {
		b.table, b.key = b.build(cands), key
	}
	t := b.table
	b.mu.Unlock()
	return t.lookup(opts.HashKey)
}

func hostsKey(hs []*Host) string {
	buf := make([]byte, 0, len(hs)*8)
	for _, h := range hs {
		buf = append(buf, h.Address()...)
		buf = append(buf, ',')
	}
	return string(buf)
}

// hash64 is FNV-1a followed by a 64-bit finalizer for good dispersion.
func hash64(b []byte) uint64 {
	f := fnv.New64a()
	f.Write(b)
	return mix64(f.Sum64())
}

func mix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// HashString hashes s the way the router's hash policies do.
func HashString(s string) uint64 { return hash64([]byte(s)) }

type ringEntry struct {
	hash uint64
	host *Host
}

type ring []ringEntry

func newRing(hosts []*Host, minSize int) hashTable {
	var total uint64
	for _, h := range hosts {
		total += uint64(h.Weight)
	}
	r := make(ring, 0, minSize+len(hosts))
	for _, h := range hosts {
		n := max(1, int(uint64(minSize)*uint64(h.Weight)/total))
		addr := h.Address()
		for i := range n {
			r = append(r, ringEntry{hash: hash64([]byte(addr + "_" + strconv.Itoa(i))), host: h})
		}
	}
	sort.Slice(r, func(i, j int) bool { return r[i].hash < r[j].hash })
	return r
}

func (r ring) lookup(hash uint64) *Host {
	i := sort.Search(len(r), func(i int) bool { return r[i].hash >= hash })
	if i == len(r) {
		i = 0
	}
	return r[i].host
}

// maglev is the Maglev lookup table (Eisenbud et al., NSDI 2016).
type maglev []*Host

func newMaglev(hosts []*Host, m int) hashTable {
	n := len(hosts)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	var maxW uint32
	for i, h := range hosts {
		a := []byte(h.Address())
		offset[i] = hash64(a) % uint64(m)
		var salt [8]byte
		binary.LittleEndian.PutUint64(salt[:], 0x9e3779b97f4a7c15)
		skip[i] = hash64(append(a, salt[:]...))%uint64(m-1) + 1
		maxW = max(maxW, h.Weight)
	}
	table := make(maglev, m)
	filled := 0
	// Weighted fill: in each round a host claims an entry when its
	// accumulated weight reaches the maximum weight.
	credit := make([]uint64, n)
	for filled < m {
		for i := 0; i < n && filled < m; i++ {
			credit[i] += uint64(hosts[i].Weight)
			if credit[i] < uint64(maxW) {
				continue
			}
			credit[i] -= uint64(maxW)
			for {
				slot := (offset[i] + next[i]*skip[i]) % uint64(m)
				next[i]++
				if table[slot] == nil {
					table[slot] = hosts[i]
					filled++
					break
				}
			}
		}
	}
	return table
}

func (t maglev) lookup(hash uint64) *Host {
	return t[hash%uint64(len(t))]
}

func allOf(hs []*Host, ok func(*Host) bool) bool {
	for _, h := range hs {
		if !ok(h) {
			return false
		}
	}
	return true
}
