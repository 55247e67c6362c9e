package xdsclient

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// split cuts b into buffers of n bytes, as gRPC may receive a message.
func split(b []byte, n int) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return out
}

func TestEnvelopeCodec(t *testing.T) {
	rc, err := anypb.New(&routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "a", Domains: []string{"a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, typeURL := range []string{RouteType, ClusterType} {
		in := &discovery.DiscoveryResponse{VersionInfo: "v1", TypeUrl: typeURL, Nonce: "n7", Resources: []*anypb.Any{rc, rc}}
		b, err := proto.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 3, 1 << 20} {
			var out discovery.DiscoveryResponse
			if err := (EnvelopeCodec{}).Unmarshal(split(b, n), &out); err != nil {
				t.Fatal(err)
			}
			if out.GetVersionInfo() != "v1" || out.GetTypeUrl() != typeURL || out.GetNonce() != "n7" {
				t.Errorf("%s in %d-byte buffers: %v", typeURL, n, &out)
			}
			want := 0
			if typeURL == ClusterType {
				want = 2 // decoded in full
			}
			if len(out.GetResources()) != want {
				t.Errorf("%s: %d resources decoded, want %d", typeURL, len(out.GetResources()), want)
			}
		}
	}
	// A truncated message is an error, not a partial envelope.
	if _, ok := envelope(split([]byte{0x0a, 0x05, 'a'}, 1)); ok {
		t.Error("truncated message accepted")
	}
}
