// Package kubetest proves the proxy's certificate client against the mesh
// CA authenticating real ServiceAccount tokens: a local API server issues
// the tokens (TokenRequest, audience istio-ca, as the kubelet projects
// them) and reviews them for the CA (TokenReview).
package kubetest

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	pb "istio.io/api/security/v1alpha1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/internal/proxy/certs"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

var (
	cs       kubernetes.Interface
	caAddr   string
	rootFile string
)

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, "proxy certificate tests", cluster.Options{Nodes: 1}, startCA))
}

// startCA serves the CA over TLS on loopback, reviewing tokens with the API
// server.
func startCA(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	var err error
	if cs, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.NewSelfSignedRoot(now)
	if err != nil {
		return nil, err
	}
	root, err := ca.ParseRoot(certPEM, keyPEM, nil, nil, now)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "proxy-certs-")
	if err != nil {
		return nil, err
	}
	rootFile = filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(rootFile, root.RootPEM(), 0o644); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	server, err := ca.NewServer(&ca.Signer{Root: root}, &ca.TokenAuthenticator{Client: cs, Audience: ca.DefaultAudience}, nil, log)
	if err != nil {
		return nil, err
	}
	serving, err := root.IssueServingCert([]string{"istiod.istio-system.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, now)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	caAddr = lis.Addr().String()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*serving}})))
	pb.RegisterIstioCertificateServiceServer(gs, server)
	go func() { _ = gs.Serve(lis) }()
	return func() error {
		gs.Stop()
		return os.RemoveAll(dir)
	}, nil
}

// tokenFile creates a ServiceAccount and writes a token for it with the
// audience, as the kubelet projects /var/run/secrets/tokens/istio-token.
func tokenFile(t *testing.T, ns, sa, audience string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(p, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func namespace(t *testing.T) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "proxy-certs-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func manager(t *testing.T, ns, sa, token string) *certs.Manager {
	t.Helper()
	m, err := certs.New(certs.Options{CAAddress: caAddr, ServerName: "istiod.istio-system.svc",
		RootCertFile: rootFile, TokenFile: token, Namespace: ns, ServiceAccount: sa,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestProjectedTokenGetsCertificate(t *testing.T) {
	ns := namespace(t)
	m := manager(t, ns, "reviews", tokenFile(t, ns, "reviews", ca.DefaultAudience))
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	cert, err := m.WorkloadCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://cluster.local/ns/" + ns + "/sa/reviews"; cert.Leaf.URIs[0].String() != want {
		t.Fatalf("identity %s, want %s", cert.Leaf.URIs[0], want)
	}
}

func TestTokenForAnotherAudienceIsRefused(t *testing.T) {
	ns := namespace(t)
	m := manager(t, ns, "ratings", tokenFile(t, ns, "ratings", "https://kubernetes.default.svc"))
	if err := m.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("a token for another audience: %v", err)
	}
}

func TestCannotClaimAnotherIdentity(t *testing.T) {
	ns := namespace(t)
	// A pod of ServiceAccount "details" asking for "productpage".
	m := manager(t, ns, "productpage", tokenFile(t, ns, "details", ca.DefaultAudience))
	if err := m.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("claiming another identity: %v", err)
	}
}
