package server

import (
	"crypto/sha256"
	"encoding/hex"
	"runtime"
	"sync"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// Proxies of one namespace mostly receive identical resources. Each
// generated resource is replaced by an identical one already held by
// another proxy, found by the hash of its deterministic encoding, so that
// thousands of proxies share one copy. The tables hold weak pointers: a
// resource no snapshot uses any more is collected and its entry removed.

type internKey [16]byte

type internTable[T any] struct {
	mu sync.Mutex
	m  map[internKey]weak.Pointer[T]
}

func (t *internTable[T]) intern(k internKey, v *T) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wp, ok := t.m[k]; ok {
		if p := wp.Value(); p != nil {
			return p
		}
	}
	if t.m == nil {
		t.m = map[internKey]weak.Pointer[T]{}
	}
	t.m[k] = weak.Make(v)
	runtime.AddCleanup(v, t.forget, k)
	return v
}

// lookup returns the live value of k, if any.
func (t *internTable[T]) lookup(k internKey) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wp, ok := t.m[k]; ok {
		return wp.Value()
	}
	return nil
}

func (t *internTable[T]) forget(k internKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wp, ok := t.m[k]; ok && wp.Value() == nil {
		delete(t.m, k)
	}
}

var (
	clusterTable  internTable[clusterv3.Cluster]
	endpointTable internTable[endpointv3.ClusterLoadAssignment]
	listenerTable internTable[listenerv3.Listener]
	routeTable    internTable[routev3.RouteConfiguration]
	secretTable   internTable[tlsv3.Secret]
)

// hasher versions a list by content while interning its items.
type hasher struct {
	buf  []byte
	list [sha256.Size]byte
	h    interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
}

func newHasher() *hasher { return &hasher{h: sha256.New()} }

// key encodes m, adds it to the list's hash and returns its own key.
func (h *hasher) key(m proto.Message) (internKey, error) {
	var err error
	h.buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(h.buf[:0], m)
	if err != nil {
		return internKey{}, err
	}
	sum := sha256.Sum256(h.buf)
	h.h.Write(sum[:])
	var k internKey
	copy(k[:], sum[:])
	return k, nil
}

func (h *hasher) version() string { return hex.EncodeToString(h.h.Sum(nil)[:8]) }

func internList[T any, PT interface {
	*T
	proto.Message
}](table *internTable[T], items []PT) (string, error) {
	h := newHasher()
	for i, it := range items {
		k, err := h.key(it)
		if err != nil {
			return "", err
		}
		items[i] = PT(table.intern(k, (*T)(it)))
	}
	return h.version(), nil
}

// internResources interns the resources of the given types in place and
// returns their versions (content hashes).
func internResources(r *xds.Resources, typeURLs map[string]bool) (map[string]string, error) {
	out := map[string]string{}
	var err error
	for t := range typeURLs {
		var v string
		switch t {
		case xds.ClusterType:
			v, err = internList(&clusterTable, r.Clusters)
		case xds.EndpointType:
			v, err = internList(&endpointTable, r.Endpoints)
		case xds.ListenerType:
			v, err = internList(&listenerTable, r.Listeners)
		case xds.RouteType:
			v, err = internList(&routeTable, r.Routes)
		case xds.SecretType:
			v, err = internList(&secretTable, r.Secrets)
		}
		if err != nil {
			return nil, err
		}
		out[t] = v
	}
	return out, nil
}
