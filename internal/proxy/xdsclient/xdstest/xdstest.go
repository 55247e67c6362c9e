// Package xdstest runs go-control-plane's ADS server in-process on
// loopback for the proxy's tests: mTLS with client certificates required
// (verified with the certstest CA's root), a snapshot cache keyed by node
// id, and a record of every request and client identity.
package xdstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/mizzen-mesh/mizzen/internal/proxy/certs/certstest"
)

// ControlPlane is a running ADS server.
type ControlPlane struct {
	Cache cache.SnapshotCache
	Addr  string
	ca    *certstest.CA

	mu    sync.Mutex
	gs    *grpc.Server
	reqs  []*discoverygrpc.DiscoveryRequest
	peers []string
}

// Start serves ADS on 127.0.0.1 until the test ends.
func Start(t testing.TB, ca *certstest.CA) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{Cache: cache.NewSnapshotCache(true, cache.IDHash{}, nil), ca: ca}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.Addr = lis.Addr().String()
	cp.serve(t, lis)
	t.Cleanup(cp.Stop)
	return cp
}

func (cp *ControlPlane) serve(t testing.TB, lis net.Listener) {
	roots := x509.NewCertPool()
	roots.AddCert(cp.ca.Root.RootCert)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{*cp.ca.ServingCert(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: roots,
	})))
	srv := server.NewServer(context.Background(), cp.Cache, server.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, _ int64, _ string) error {
			p, _ := peer.FromContext(ctx)
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				cp.mu.Lock()
				for _, u := range ti.State.PeerCertificates[0].URIs {
					cp.peers = append(cp.peers, u.String())
				}
				cp.mu.Unlock()
			}
			return nil
		},
		StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
			cp.mu.Lock()
			cp.reqs = append(cp.reqs, r)
			cp.mu.Unlock()
			return nil
		},
	})
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	cp.mu.Lock()
	cp.gs = gs
	cp.mu.Unlock()
	go func() { _ = gs.Serve(lis) }()
}

// Stop stops serving; Restart serves again on the same address.
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.gs != nil {
		cp.gs.Stop()
		cp.gs = nil
	}
}

// Restart serves again on the same address.
func (cp *ControlPlane) Restart(t testing.TB) {
	t.Helper()
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", cp.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cp.serve(t, lis)
}

// Set publishes a snapshot for the node.
func (cp *ControlPlane) Set(t testing.TB, nodeID, version string, res map[resourcev3.Type][]types.Resource) {
	t.Helper()
	snap, err := cache.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

// Requests returns the requests of type typeURL received so far.
func (cp *ControlPlane) Requests(typeURL string) []*discoverygrpc.DiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []*discoverygrpc.DiscoveryRequest
	for _, r := range cp.reqs {
		if r.GetTypeUrl() == typeURL {
			out = append(out, r)
		}
	}
	return out
}

// ForgetRequests clears the record of requests.
func (cp *ControlPlane) ForgetRequests() {
	cp.mu.Lock()
	cp.reqs = nil
	cp.mu.Unlock()
}

// Peers returns the SPIFFE IDs of the client certificates seen.
func (cp *ControlPlane) Peers() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.peers)
}
