package server

import (
	"context"
	"runtime"
	"sync"
	"time"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The snapshot cache encodes every resource again for every response on
// every stream: with thousands of proxies sharing the same resources
// (groups and interning), that is most of a push's CPU and memory. The
// wire cache keeps each (interned) resource's encoding once, as an Any,
// and the SotW responses of the snapshot cache are rebuilt from those.

// wireTable maps resources to their encoding without keeping them alive.
type wireTable[T any] struct {
	mu sync.Mutex
	m  map[weak.Pointer[T]]*anypb.Any
}

func (t *wireTable[T]) get(p *T, typeURL string, m proto.Message) (*anypb.Any, error) {
	wp := weak.Make(p)
	t.mu.Lock()
	a, ok := t.m[wp]
	t.mu.Unlock()
	if ok {
		return a, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	a = &anypb.Any{TypeUrl: typeURL, Value: b}
	t.mu.Lock()
	if t.m == nil {
		t.m = map[weak.Pointer[T]]*anypb.Any{}
	}
	if prev, ok := t.m[wp]; ok {
		a = prev
	} else {
		t.m[wp] = a
		runtime.AddCleanup(p, t.forget, wp)
	}
	t.mu.Unlock()
	return a, nil
}

func (t *wireTable[T]) forget(wp weak.Pointer[T]) {
	t.mu.Lock()
	delete(t.m, wp)
	t.mu.Unlock()
}

var (
	clusterWire  wireTable[clusterv3.Cluster]
	endpointWire wireTable[endpointv3.ClusterLoadAssignment]
	listenerWire wireTable[listenerv3.Listener]
	routeWire    wireTable[routev3.RouteConfiguration]
	secretWire   wireTable[tlsv3.Secret]
)

// wireOf returns the encoding of one resource.
func wireOf(typeURL string, r types.Resource) (*anypb.Any, error) {
	switch v := r.(type) {
	case *clusterv3.Cluster:
		return clusterWire.get(v, typeURL, v)
	case *endpointv3.ClusterLoadAssignment:
		return endpointWire.get(v, typeURL, v)
	case *listenerv3.Listener:
		return listenerWire.get(v, typeURL, v)
	case *routev3.RouteConfiguration:
		return routeWire.get(v, typeURL, v)
	case *tlsv3.Secret:
		return secretWire.get(v, typeURL, v)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: typeURL, Value: b}, nil
}

// wireCache is the snapshot cache with SotW responses built from the wire
// table. Delta streams use the snapshot cache as it is.
//
// It also bounds how many responses are in flight (sent and not yet
// answered by the proxy's next request of that type) to maxInFlight, as
// Istio throttles its pushes: a response waits for a slot before it is
// handed to the stream, so that at most that many configurations sit in
// gRPC's send buffers while slow proxies read them. A slot is given back
// when the proxy's next request of the type arrives (its ACK or NACK), when
// the watch is cancelled, or after inFlightTimeout.
type wireCache struct {
	cachev3.SnapshotCache
	s        *Server
	inFlight chan struct{}

	mu      sync.Mutex
	pending map[watchKey]func() // releases the slot of a sent response
}

type watchKey struct{ node, typeURL string }

const (
	maxInFlight     = 100
	inFlightTimeout = 5 * time.Second
)

func newWireCache(sc cachev3.SnapshotCache, s *Server) *wireCache {
	return &wireCache{SnapshotCache: sc, s: s, inFlight: make(chan struct{}, maxInFlight), pending: map[watchKey]func(){}}
}

// release gives back the slot held for k, if any.
func (c *wireCache) release(k watchKey) {
	c.mu.Lock()
	f := c.pending[k]
	delete(c.pending, k)
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

// CreateWatch forwards the snapshot cache's responses, rebuilt.
func (c *wireCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	key := watchKey{req.GetNode().GetId(), req.GetTypeUrl()}
	// A new request of this type answers the previous response.
	c.release(key)
	in := make(chan cachev3.Response, 1)
	done := make(chan struct{})
	cancel, err := c.SnapshotCache.CreateWatch(req, sub, in)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case raw := <-in:
				r := c.rebuild(raw)
				select {
				case c.inFlight <- struct{}{}:
				case <-done:
					return
				}
				var once sync.Once
				free := func() { once.Do(func() { <-c.inFlight }) }
				timer := time.AfterFunc(inFlightTimeout, free)
				c.mu.Lock()
				prev := c.pending[key]
				c.pending[key] = func() { timer.Stop(); free() }
				c.mu.Unlock()
				if prev != nil {
					prev()
				}
				select {
				case out <- r:
				case <-done:
					c.release(key)
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		if cancel != nil {
			cancel()
		}
		once.Do(func() { close(done) })
	}, nil
}

// wireResponse is a snapshot cache response whose wire form was assembled
// from shared encodings. It keeps only what the stream needs of the cache's
// own response, which holds a wrapper per resource and is left to the
// collector at once.
type wireResponse struct {
	req      *discovery.DiscoveryRequest
	version  string
	returned map[string]string
	ctx      context.Context
	out      *discovery.DiscoveryResponse
}

func (r *wireResponse) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) {
	return r.out, nil
}
func (r *wireResponse) GetRequest() *discovery.DiscoveryRequest { return r.req }
func (r *wireResponse) GetVersion() (string, error)             { return r.version, nil }
func (r *wireResponse) GetResponseVersion() string              { return r.version }
func (r *wireResponse) GetReturnedResources() map[string]string { return r.returned }
func (r *wireResponse) GetContext() context.Context             { return r.ctx }

// rebuild finds the snapshot r was made from (the node's recent ones) and
// assembles its resources from the wire table; r is returned unchanged
// when the snapshot is gone.
func (c *wireCache) rebuild(r cachev3.Response) cachev3.Response {
	req := r.GetRequest()
	typeURL := req.GetTypeUrl()
	version := r.GetResponseVersion()
	c.s.mu.Lock()
	n := c.s.nodes[req.GetNode().GetId()]
	c.s.mu.Unlock()
	snap := n.snapshotOf(typeURL, version)
	if snap == nil {
		return r
	}
	items := snap.GetResources(typeURL)
	var names map[string]bool
	if rn := req.GetResourceNames(); len(rn) > 0 {
		names = make(map[string]bool, len(rn))
		for _, name := range rn {
			names[name] = true
		}
	}
	out := &discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: typeURL, Resources: make([]*anypb.Any, 0, len(items))}
	for name, res := range items {
		if names != nil && !names[name] {
			continue
		}
		a, err := wireOf(typeURL, res)
		if err != nil {
			return r
		}
		out.Resources = append(out.Resources, a)
	}
	return &wireResponse{req: req, version: version, returned: r.GetReturnedResources(), ctx: r.GetContext(), out: out}
}
