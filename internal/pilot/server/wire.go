package server

import (
	"runtime"
	"sync"
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
type wireCache struct {
	cachev3.SnapshotCache
	s *Server
}

// CreateWatch forwards the snapshot cache's responses, rebuilt.
func (c *wireCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
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
			case r := <-in:
				select {
				case out <- c.rebuild(r):
				case <-done:
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
// from shared encodings.
type wireResponse struct {
	cachev3.Response
	out *discovery.DiscoveryResponse
}

func (r *wireResponse) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) {
	return r.out, nil
}

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
	return &wireResponse{Response: r, out: out}
}
