// Package ca tests the mesh certificate authority (internal/ca) through a
// real API server: the CA loads or creates its root in a Secret, serves
// Istio's CSR protocol over gRPC on 127.0.0.1 (plaintext here; the control
// plane serves it over TLS), authenticates callers with TokenReview, and
// publishes the root as a ConfigMap in every namespace.
package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pb "istio.io/api/security/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

const (
	meshNamespace = "istio-system"
	maxTTL        = 48 * time.Hour
	waitTimeout   = 30 * time.Second
)

var (
	cs        kubernetes.Interface
	root      *ca.Root
	server    *ca.Server
	publisher *ca.RootPublisher
	caClient  pb.IstioCertificateServiceClient
	registry  = prometheus.NewRegistry()
	// saSigningKey is the API server's token signing key (PEM file).
	saSigningKey string
)

func TestMain(m *testing.M) {
	os.Exit(cluster.RunTests(m, "CA tests", cluster.Options{Nodes: 1}, startCA))
}

// startCA serves the CA over gRPC on loopback and runs the root publisher,
// as the ServiceAccount istio-system/istiod, until ctx ends.
func startCA(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	var err error
	if cs, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	saSigningKey = c.ServiceAccountSigningKeyFile()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNamespace}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	// The CA runs with only what it needs (see grantCA).
	caCS, err := caIdentity(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("the CA's identity: %w", err)
	}
	if root, err = ca.LoadOrCreateRoot(ctx, caCS, meshNamespace); err != nil {
		return nil, fmt.Errorf("loading the root: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	server, err = ca.NewServer(&ca.Signer{Root: root, MaxTTL: maxTTL},
		&ca.TokenAuthenticator{Client: caCS, Audience: ca.DefaultAudience}, registry, log)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer()
	pb.RegisterIstioCertificateServiceServer(gs, server)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		gs.Stop()
		return nil, err
	}
	caClient = pb.NewIstioCertificateServiceClient(conn)

	publisher = ca.NewRootPublisher(caCS, root.RootPEM(), time.Minute, log)
	pubDone := make(chan error, 1)
	go func() { pubDone <- publisher.Run(ctx) }()
	return func() error {
		conn.Close()
		gs.Stop()
		if err := <-pubDone; err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("root publisher: %w", err)
		}
		return nil
	}, nil
}

// eventually retries f until it succeeds or waitTimeout passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createNamespace creates a namespace with a generated name.
func createNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// caIdentity creates ServiceAccount istio-system/istiod with the least
// privilege the CA needs and returns a client that authenticates as it:
// TokenReviews; the root Secrets of the mesh namespace; namespaces and
// ConfigMaps cluster-wide to publish the root.
func caIdentity(ctx context.Context, c *cluster.Cluster) (kubernetes.Interface, error) {
	const sa = "istiod"
	if _, err := cs.CoreV1().ServiceAccounts(meshNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: meshNamespace}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "mizzen-ca"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "mizzen-ca"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "mizzen-ca"},
		Subjects:   subjects,
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.RbacV1().Roles(meshNamespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "mizzen-ca"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.RbacV1().RoleBindings(meshNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "mizzen-ca"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "mizzen-ca"},
		Subjects:   subjects,
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	user, err := c.Env.ControlPlane.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + meshNamespace + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + meshNamespace},
	}, nil)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(user.Config())
}
