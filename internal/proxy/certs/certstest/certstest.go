// Package certstest runs the mesh CA (internal/ca) in-process on loopback
// for the proxy's tests: a self-signed root, the CSR service over TLS with
// a serving certificate for "localhost"/127.0.0.1 issued from that root,
// and a fake authenticator that knows the tokens a test registers.
package certstest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	pb "istio.io/api/security/v1alpha1"

	"github.com/mizzen-mesh/mizzen/internal/ca"
)

// CA is a running in-process CA.
type CA struct {
	Addr     string // 127.0.0.1:port
	RootFile string // the mesh root, PEM
	Root     *ca.Root
	Server   *ca.Server
	dir      string

	mu     sync.Mutex
	tokens map[string]ca.Identity
	gs     *grpc.Server
}

// Start starts a CA whose certificates live at most maxTTL (0: the CA's
// default); it stops with the test.
func Start(t testing.TB, maxTTL time.Duration) *CA {
	t.Helper()
	now := time.Now()
	certPEM, keyPEM, err := ca.NewSelfSignedRoot(now)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.ParseRoot(certPEM, keyPEM, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	c := &CA{Root: root, dir: t.TempDir(), tokens: map[string]ca.Identity{}}
	c.RootFile = filepath.Join(c.dir, "root-cert.pem")
	if err := os.WriteFile(c.RootFile, root.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c.Server, err = ca.NewServer(&ca.Signer{Root: root, MaxTTL: maxTTL}, authFunc(c.authenticate), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Addr = lis.Addr().String()
	c.serve(t, lis)
	t.Cleanup(c.Stop)
	return c
}

// ServingCert issues a serving certificate for localhost and 127.0.0.1.
func (c *CA) ServingCert(t testing.TB) *tls.Certificate {
	t.Helper()
	cert, err := c.Root.IssueServingCert([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func (c *CA) serve(t testing.TB, lis net.Listener) {
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{*c.ServingCert(t)}, MinVersion: tls.VersionTLS12,
	})))
	pb.RegisterIstioCertificateServiceServer(gs, c.Server)
	c.mu.Lock()
	c.gs = gs
	c.mu.Unlock()
	go func() { _ = gs.Serve(lis) }()
}

// Stop stops serving (Restart serves again on the same address).
func (c *CA) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gs != nil {
		c.gs.Stop()
		c.gs = nil
	}
}

// Restart serves again on the same address.
func (c *CA) Restart(t testing.TB) {
	t.Helper()
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", c.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.serve(t, lis)
}

// TokenFile writes a token for namespace/serviceAccount that the CA
// accepts and returns the file's path.
func (c *CA) TokenFile(t testing.TB, namespace, serviceAccount string) string {
	t.Helper()
	tok := fmt.Sprintf("token-%s-%s-%d", namespace, serviceAccount, time.Now().UnixNano())
	c.mu.Lock()
	c.tokens[tok] = ca.Identity{Namespace: namespace, ServiceAccount: serviceAccount}
	c.mu.Unlock()
	p := filepath.Join(c.dir, "token-"+namespace+"-"+serviceAccount)
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (c *CA) authenticate(_ context.Context, token string) (ca.Identity, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.tokens[token]
	if !ok {
		return ca.Identity{}, &ca.UnauthenticatedError{Reason: "unknown token"}
	}
	return id, nil
}

type authFunc func(context.Context, string) (ca.Identity, error)

func (f authFunc) Authenticate(ctx context.Context, token string) (ca.Identity, error) {
	return f(ctx, token)
}
