package pilot

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

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
		time.Sleep(50 * time.Millisecond)
	}
}

func createNamespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if strings.HasSuffix(name, "-") {
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: name}}
	}
	got, err := cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got.Name
}

// token returns a ServiceAccount token for audience, creating the
// ServiceAccount if needed.
func token(t *testing.T, ns, sa, audience string) string {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// caTLS verifies pilot's serving certificate against the mesh root.
func caTLS() *tls.Config {
	return &tls.Config{RootCAs: rootPool, ServerName: "istiod.istio-system.svc", MinVersion: tls.VersionTLS12}
}

// requestCert asks pilot's CA on the TLS port for a certificate with tok.
func requestCert(ctx context.Context, grpcAddr, tok string) (*tls.Certificate, *pb.IstioCertificateResponse, error) {
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(caTLS())))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), ValidityDuration: 3600})
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	pair, err := tls.X509KeyPair([]byte(strings.Join(resp.GetCertChain(), "")), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		return nil, nil, err
	}
	return &pair, resp, nil
}

// workloadTLS returns a client TLS configuration with a workload
// certificate for ns/sa obtained from pilot's CA with a real token.
func workloadTLS(t *testing.T, grpcAddr, ns, sa string) *tls.Config {
	t.Helper()
	cert, _, err := requestCert(context.Background(), grpcAddr, token(t, ns, sa, "istio-ca"))
	if err != nil {
		t.Fatalf("workload certificate for %s/%s: %v", ns, sa, err)
	}
	cfg := caTLS()
	cfg.Certificates = []tls.Certificate{*cert}
	return cfg
}

// node builds a node as the proxy sends it.
func node(typ, ip, pod, ns, sa string, labels map[string]string, extra map[string]string) *corev3.Node {
	lj, _ := json.Marshal(labels)
	md := map[string]any{"NAMESPACE": ns, "NAME": pod, "SERVICE_ACCOUNT": sa, "INSTANCE_IPS": ip, "LABELS": string(lj)}
	for k, v := range extra {
		md[k] = v
	}
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	return &corev3.Node{Id: fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", typ, ip, pod, ns, ns), Metadata: s}
}

// client is a connected xDS client and its update stream.
type client struct {
	*xdsclient.Client
	updates chan xdsclient.Update
}

// dialXDS connects an xDS client to grpcAddr.
func dialXDS(t *testing.T, grpcAddr string, cfg *tls.Config, opts xdsclient.Options) (*client, error) {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	ch := make(chan xdsclient.Update, 10000)
	opts.Updates = ch
	c, err := xdsclient.Dial(ctx, conn, opts)
	if err != nil {
		return nil, err
	}
	return &client{Client: c, updates: ch}, nil
}

// mustDial connects and waits until the client holds listeners and
// clusters.
func mustDial(t *testing.T, cfg *tls.Config, opts xdsclient.Options) *client {
	t.Helper()
	c, err := dialXDS(t, addrs.GRPC, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "first configuration", func() error {
		select {
		case <-c.Done():
			t.Fatalf("stream ended: %v", c.Err())
		default:
		}
		if len(c.Resources(xdsclient.ClusterType)) == 0 || len(c.Resources(xdsclient.ListenerType)) == 0 {
			return fmt.Errorf("no clusters or listeners yet")
		}
		return nil
	})
	return c
}

// waitUpdate waits for an update of typeURL satisfying ok.
func (c *client) waitUpdate(t *testing.T, typeURL string, ok func(xdsclient.Update) bool) xdsclient.Update {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case u := <-c.updates:
			if u.TypeURL == typeURL && ok(u) {
				return u
			}
		case <-c.Done():
			t.Fatalf("stream ended: %v", c.Err())
		case <-timeout:
			t.Fatalf("no matching %s update within %s", typeURL, waitTimeout)
		}
	}
}

// drain discards the updates received so far.
func (c *client) drain() {
	for {
		select {
		case <-c.updates:
		default:
			return
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
