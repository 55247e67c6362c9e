package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/ca"
)

func TestRootCreatedOnceByRacingReplicas(t *testing.T) {
	ns := createNamespace(t, "race")
	const replicas = 4
	roots := make([]*ca.Root, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			roots[i], errs[i] = ca.LoadOrCreateRoot(context.Background(), cs, ns)
		})
	}
	close(start)
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if !roots[i].RootCert.Equal(roots[0].RootCert) {
			t.Errorf("replica %d uses another root", i)
		}
	}
	secs, err := cs.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(secs.Items) != 1 || secs.Items[0].Name != ca.SelfSignedSecret {
		t.Fatalf("Secrets: %d, want only %s", len(secs.Items), ca.SelfSignedSecret)
	}
	stored, _ := pem.Decode(secs.Items[0].Data[ca.CACertKey])
	if stored == nil || string(stored.Bytes) != string(roots[0].RootCert.Raw) {
		t.Error("the stored root is not the one in use")
	}
	c := roots[0].RootCert
	if !c.IsCA || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "cluster.local" ||
		c.NotAfter.Sub(c.NotBefore) < 3650*24*time.Hour {
		t.Errorf("root: CA %v, subject %v, %s to %s", c.IsCA, c.Subject, c.NotBefore, c.NotAfter)
	}
	// Loading again returns the same root.
	again, err := ca.LoadOrCreateRoot(context.Background(), cs, ns)
	if err != nil || !again.RootCert.Equal(c) {
		t.Errorf("reloaded: %v", err)
	}
}

func TestPluginCACerts(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "plugin")
	// A user's root and an intermediate for the mesh, as Istio documents.
	rootPEM, rootKeyPEM, err := ca.NewSelfSignedRoot(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	userRoot, err := ca.ParseRoot(rootPEM, rootKeyPEM, nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	interPEM, interKeyPEM := intermediate(t, userRoot)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ca.PluginSecret, Namespace: ns},
		Data: map[string][]byte{
			ca.CACertKey: interPEM, ca.CAKeyKey: interKeyPEM, ca.RootCertKey: rootPEM,
			ca.CertChainKey: append(append([]byte{}, interPEM...), rootPEM...),
		}}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := ca.LoadOrCreateRoot(ctx, cs, ns)
	if err != nil {
		t.Fatal(err)
	}
	if !r.RootCert.Equal(userRoot.RootCert) || r.Cert.Subject.CommonName != "mesh intermediate" {
		t.Errorf("root %v, signing %v", r.RootCert.Subject, r.Cert.Subject)
	}
	if _, err := cs.CoreV1().Secrets(ns).Get(ctx, ca.SelfSignedSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("%s was created although cacerts exists: %v", ca.SelfSignedSecret, err)
	}
	// A certificate from it chains leaf, intermediate, root.
	chain, err := (&ca.Signer{Root: r}).Sign([]byte(csr(t)), ca.Identity{Namespace: ns, ServiceAccount: "x"}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || chain[1] != string(interPEM) || !parseCert(t, chain[2]).Equal(userRoot.RootCert) {
		t.Errorf("chain of %d", len(chain))
	}

	// A broken cacerts is refused with a clear error, not replaced.
	sec.Data[ca.CAKeyKey] = rootKeyPEM
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = ca.LoadOrCreateRoot(ctx, cs, ns)
	if err == nil || !strings.Contains(err.Error(), "cacerts") || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v", err)
	}
}

// intermediate makes a CA certificate signed by parent.
func intermediate(t *testing.T, parent *ca.Root) (certPEM, keyPEM []byte) {
	t.Helper()
	// Reuse the root generator for a key pair, then sign its key with parent.
	_, kp, err := ca.NewSelfSignedRoot(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(kp)
	key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "mesh intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(nil, tmpl, parent.Cert, key.(crypto.Signer).Public(), parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), kp
}
