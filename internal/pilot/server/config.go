package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// config is one generated configuration as the streams send it: per type,
// the resources encoded once. It is immutable and shared by every stream of
// every proxy of a group (configKey); streams hold a pointer to what they
// sent, never a copy.
type config struct {
	res  *xds.Resources
	sets map[string]*resourceSet // by type URL, every type of allTypes
}

// resourceSet is one type's resources of a configuration, sorted by name.
// Immutable once built.
type resourceSet struct {
	typeURL string
	version string
	names   []string
	items   []proto.Message
	wire    []*anypb.Any
	index   map[string]int

	// versions are per-resource versions (hashes of the encodings) for
	// delta streams, computed the first time one asks.
	versionsOnce sync.Once
	versions     []string

	// last filtering by a subscription, reused by the next stream that
	// subscribed the same names (they share the interned nameSet).
	filterMu  sync.Mutex
	filterFor *nameSet
	filtered  []*anypb.Any

	// SotW responses: the wildcard one and the last one by names, each
	// built (and encoded) once for every stream they are sent to.
	encMu          sync.Mutex
	encAll, encSub *encodedResponse
}

// encodedResponse is a SotW response of a resource set, shared by the
// streams it is sent to. Its nonce is unique to it: a stream is never sent
// the same encodedResponse twice in a row, so the nonce still tells which
// response a request answers.
type encodedResponse struct {
	names    *nameSet
	nonce    string
	count    int
	resp     *discovery.DiscoveryResponse
	prepared any // the wire encoding of resp (nil without one)
}

// nonces numbers responses across the server.
var nonces atomic.Uint64

// encoded returns the response carrying the resources names selects (all
// with nil), encoded with prepare when given.
func (r *resourceSet) encoded(names *nameSet, prepare func(*discovery.DiscoveryResponse) (any, error)) (*encodedResponse, error) {
	r.encMu.Lock()
	defer r.encMu.Unlock()
	slot := &r.encSub
	if names == nil {
		slot = &r.encAll
	}
	if e := *slot; e != nil && e.names == names {
		return e, nil
	}
	res := r.filter(names)
	e := &encodedResponse{names: names, nonce: strconv.FormatUint(nonces.Add(1), 10), count: len(res)}
	e.resp = &discovery.DiscoveryResponse{VersionInfo: r.version, TypeUrl: r.typeURL, Resources: res, Nonce: e.nonce}
	if prepare != nil {
		var err error
		if e.prepared, err = prepare(e.resp); err != nil {
			return nil, err
		}
	}
	*slot = e
	return e, nil
}

// resourceName is the name xDS knows a resource by.
func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *tlsv3.Secret:
		return r.GetName()
	}
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

// newResourceSet encodes items (through the shared wire table).
func newResourceSet(typeURL, version string, items []proto.Message) (*resourceSet, error) {
	items = slices.Clone(items)
	slices.SortStableFunc(items, func(a, b proto.Message) int {
		na, nb := resourceName(a), resourceName(b)
		switch {
		case na < nb:
			return -1
		case na > nb:
			return 1
		}
		return 0
	})
	r := &resourceSet{typeURL: typeURL, version: version, items: items,
		names: make([]string, len(items)), wire: make([]*anypb.Any, len(items)), index: make(map[string]int, len(items))}
	for i, m := range items {
		a, err := wireOf(typeURL, m)
		if err != nil {
			return nil, err
		}
		r.names[i], r.wire[i] = resourceName(m), a
		r.index[r.names[i]] = i
	}
	return r, nil
}

// resourceVersion is the version of the i-th resource (delta).
func (r *resourceSet) resourceVersion(i int) string {
	r.versionsOnce.Do(func() {
		r.versions = make([]string, len(r.wire))
		for j, a := range r.wire {
			sum := sha256.Sum256(a.GetValue())
			r.versions[j] = hex.EncodeToString(sum[:8])
		}
	})
	return r.versions[i]
}

// versionOf returns the version of the named resource.
func (r *resourceSet) versionOf(name string) (string, bool) {
	if r == nil {
		return "", false
	}
	i, ok := r.index[name]
	if !ok {
		return "", false
	}
	return r.resourceVersion(i), true
}

// filter returns the encodings of the resources named by ns (all of
// them when ns is nil: a wildcard subscription).
func (r *resourceSet) filter(ns *nameSet) []*anypb.Any {
	if ns == nil {
		return r.wire
	}
	r.filterMu.Lock()
	defer r.filterMu.Unlock()
	if r.filterFor == ns {
		return r.filtered
	}
	out := make([]*anypb.Any, 0, min(len(r.wire), len(ns.names)))
	for i, name := range r.names {
		if ns.has(name) {
			out = append(out, r.wire[i])
		}
	}
	if len(out) == len(r.wire) {
		out = r.wire
	}
	r.filterFor, r.filtered = ns, out
	return out
}

// newConfig builds the wire form of res; the sets of prev whose version is
// unchanged are kept as they are.
func newConfig(res *xds.Resources, versions map[string]string, prev *config) (*config, error) {
	c := &config{res: res, sets: make(map[string]*resourceSet, len(allTypes))}
	for typeURL, items := range resourceLists(res) {
		if prev != nil {
			if old := prev.sets[typeURL]; old != nil && old.version == versions[typeURL] {
				c.sets[typeURL] = old
				continue
			}
		}
		set, err := newResourceSet(typeURL, versions[typeURL], items)
		if err != nil {
			return nil, err
		}
		c.sets[typeURL] = set
	}
	return c, nil
}

// nameSet is a set of resource names a stream subscribed to. Sets are
// interned: the thousands of proxies that subscribe to the same names
// (every EDS cluster of their configuration) share one.
type nameSet struct {
	names []string
	set   map[string]struct{}
	key   internKey // namesKey(names)
}

func (n *nameSet) has(name string) bool {
	if n == nil {
		return false
	}
	_, ok := n.set[name]
	return ok
}

func (n *nameSet) len() int {
	if n == nil {
		return 0
	}
	return len(n.names)
}

// equal reports whether n holds exactly names (in any order): as many,
// each held, and the same order-independent hash, which a list with
// duplicates standing in for missing names does not have.
func (n *nameSet) equal(names []string) bool {
	if n.len() != len(names) {
		return false
	}
	if n == nil {
		return true // both empty
	}
	for _, s := range names {
		if !n.has(s) {
			return false
		}
	}
	return namesKey(names) == n.key
}

var nameSets internTable[nameSet]

// internNames returns the shared set of names (nil for none). The key is
// independent of the order of names; a hit is checked name by name, and
// costs no allocation (thousands of streams subscribe the same names).
func internNames(names []string) *nameSet {
	if len(names) == 0 {
		return nil
	}
	if got := nameSets.lookup(namesKey(names)); got != nil && got.equal(names) {
		return got
	}
	seen := make(map[string]struct{}, len(names))
	uniq := make([]string, 0, len(names))
	for _, s := range names {
		if _, dup := seen[s]; !dup {
			seen[s] = struct{}{}
			uniq = append(uniq, s)
		}
	}
	k := namesKey(uniq)
	if got := nameSets.lookup(k); got != nil && got.equal(uniq) {
		return got
	}
	ns := &nameSet{names: uniq, set: seen, key: k}
	slices.Sort(ns.names)
	if shared := nameSets.intern(k, ns); shared == ns || shared.equal(ns.names) {
		return shared
	}
	return ns // another set has the same key: not shared
}

// namesKey hashes a list of names independently of their order.
func namesKey(names []string) internKey {
	var a, b uint64
	for _, s := range names {
		a += strHash(s, 14695981039346656037)
		b += strHash(s, 1099511628211)
	}
	var k internKey
	binary.LittleEndian.PutUint64(k[:8], a^uint64(len(names)))
	binary.LittleEndian.PutUint64(k[8:], b)
	return k
}

// strHash is FNV-1a of s from the given offset basis.
func strHash(s string, basis uint64) uint64 {
	h := basis
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
