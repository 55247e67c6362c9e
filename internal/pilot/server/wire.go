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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Thousands of proxies share the same resources (groups and interning):
// the wire table keeps each (interned) resource's encoding once, as an
// Any, and every response on every stream is assembled from those.

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
func wireOf(typeURL string, r proto.Message) (*anypb.Any, error) {
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
