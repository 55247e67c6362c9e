package discovery

import (
	"context"
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
)

// The Secrets a Gateway names become credentials (key pair, CA bundle from
// the "-cacert" Secret); Secrets no Gateway names never reach the snapshot,
// and a rotated Secret is seen.
func TestGatewayCredentials(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "creds")
	secret := func(name string, typ corev1.SecretType, data map[string]string) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: typ, StringData: data}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	secret("bookinfo-cert", corev1.SecretTypeTLS, map[string]string{"tls.crt": "CERT1", "tls.key": "KEY1"})
	secret("bookinfo-cert-cacert", corev1.SecretTypeOpaque, map[string]string{"ca.crt": "CA1"})
	secret("unrelated", corev1.SecretTypeTLS, map[string]string{"tls.crt": "X", "tls.key": "Y"})
	if _, err := ist.NetworkingV1().Gateways(ns).Create(ctx, &networkingv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: ns},
		Spec: networking.Gateway{Selector: map[string]string{"istio": "ingressgateway"}, Servers: []*networking.Server{{
			Port:  &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"},
			Hosts: []string{"bookinfo.example.com"},
			Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_MUTUAL, CredentialName: "bookinfo-cert"},
		}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	credential := func(cert, key, ca string) func() error {
		return func() error {
			s := ctrl.Snapshot()
			c := s.Credentials[ns+"/bookinfo-cert"]
			if c == nil {
				return fmt.Errorf("no credential; have %d", len(s.Credentials))
			}
			if string(c.CertChain) != cert || string(c.PrivateKey) != key || string(c.CACert) != ca {
				return fmt.Errorf("credential %s/%s/%s", c.CertChain, c.PrivateKey, c.CACert)
			}
			if s.Credentials[ns+"/unrelated"] != nil {
				return fmt.Errorf("a Secret no Gateway names is a credential")
			}
			return nil
		}
	}
	eventually(t, "the credential", credential("CERT1", "KEY1", "CA1"))

	// Rotation.
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, "bookinfo-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["tls.crt"], sec.Data["tls.key"] = []byte("CERT2"), []byte("KEY2")
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rotated credential", credential("CERT2", "KEY2", "CA1"))
	if _, ok := rec.find(func(ch discovery.Change) bool {
		return ch.Kind == discovery.KindSecret && ch.Namespace == ns && ch.Name == "bookinfo-cert"
	}); !ok {
		t.Error("no Secret change for the rotation")
	}
	if _, ok := rec.find(func(ch discovery.Change) bool {
		return ch.Kind == discovery.KindSecret && ch.Namespace == ns && ch.Name == "unrelated"
	}); ok {
		t.Error("a change for a Secret no Gateway names")
	}
}
