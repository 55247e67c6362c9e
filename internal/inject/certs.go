package inject

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Keys of the serving certificate Secret (a kubernetes.io/tls Secret that
// also keeps its CA, so that rotating the serving certificate leaves the
// webhook's caBundle unchanged).
const (
	SecretCACert = "ca.crt"
	SecretCAKey  = "ca.key"
)

// certBundle is a serving certificate and the CA that signed it, PEM.
type certBundle struct {
	caCert, caKey, cert, key []byte
}

// certSettings say how long generated certificates live.
type certSettings struct {
	hosts       []string
	validity    time.Duration // serving certificate
	renewBefore time.Duration // renew when less than this is left
	caValidity  time.Duration
}

// ensureSecretCert returns a valid serving certificate from the Secret,
// creating or renewing it (and the Secret) when needed. Replicas racing on
// the Secret converge: a lost create or update re-reads what won.
func ensureSecretCert(ctx context.Context, cs kubernetes.Interface, ns, name string, s certSettings, now time.Time) (*certBundle, error) {
	for attempt := 0; attempt < 5; attempt++ {
		sec, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
		}
		exists := err == nil
		var cur *certBundle
		if exists {
			cur = &certBundle{sec.Data[SecretCACert], sec.Data[SecretCAKey], sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]}
			if cur.valid(s, now) {
				return cur, nil
			}
		}
		next, err := renew(cur, s, now)
		if err != nil {
			return nil, err
		}
		data := map[string][]byte{
			SecretCACert: next.caCert, SecretCAKey: next.caKey,
			corev1.TLSCertKey: next.cert, corev1.TLSPrivateKeyKey: next.key,
		}
		if !exists {
			_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
					Labels: map[string]string{"app": "sidecar-injector"}},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}, metav1.CreateOptions{})
		} else {
			sec.Data = data
			_, err = cs.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{})
		}
		if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("writing Secret %s/%s: %w", ns, name, err)
		}
		return next, nil
	}
	return nil, fmt.Errorf("Secret %s/%s keeps changing under us", ns, name)
}

// valid tells whether b holds a CA and a serving certificate signed by it,
// covering every host, with more than renewBefore left.
func (b *certBundle) valid(s certSettings, now time.Time) bool {
	ca, _, err := parsePair(b.caCert, b.caKey)
	if err != nil || now.Add(s.renewBefore).After(ca.NotAfter) {
		return false
	}
	cert, _, err := parsePair(b.cert, b.key)
	if err != nil || now.Add(s.renewBefore).After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return false
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return false
	}
	for _, h := range s.hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// renew issues a serving certificate, from the current CA when it is still
// good (the caBundle then stays), else from a new CA.
func renew(cur *certBundle, s certSettings, now time.Time) (*certBundle, error) {
	var ca *x509.Certificate
	var caKey *ecdsa.PrivateKey
	out := &certBundle{}
	if cur != nil {
		c, k, err := parsePair(cur.caCert, cur.caKey)
		if err == nil && now.Add(s.renewBefore+s.validity).Before(c.NotAfter) {
			ca, caKey = c, k
			out.caCert, out.caKey = cur.caCert, cur.caKey
		}
	}
	if ca == nil {
		var err error
		caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "mizzen-sidecar-injector-ca", Organization: []string{"Mizzen"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(s.caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		if ca, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
		out.caCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if out.caKey, err = encodeKey(caKey); err != nil {
			return nil, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(s.validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range s.hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	out.cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if out.key, err = encodeKey(key); err != nil {
		return nil, err
	}
	return out, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return cert, nil, errors.New("not an ECDSA key")
	}
	return cert, key, nil
}

// readCertDir reads tls.crt, tls.key and, if present, ca.crt from dir (as
// cert-manager writes them into a mounted Secret).
func readCertDir(dir string) (*certBundle, error) {
	cert, err := os.ReadFile(filepath.Join(dir, corev1.TLSCertKey))
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(filepath.Join(dir, corev1.TLSPrivateKeyKey))
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, SecretCACert))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return &certBundle{caCert: ca, cert: cert, key: key}, nil
}

// syncCABundle writes ca into every webhook of the named
// MutatingWebhookConfiguration whose caBundle differs, patching only those
// fields. It reports whether the configuration exists.
func syncCABundle(ctx context.Context, cs kubernetes.Interface, name string, ca []byte) (bool, error) {
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	for i, wh := range mwc.Webhooks {
		if bytes.Equal(wh.ClientConfig.CABundle, ca) {
			continue
		}
		// The test guards against the list changing between get and patch.
		ops = append(ops,
			op{"test", fmt.Sprintf("/webhooks/%d/name", i), wh.Name},
			op{"add", fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), ca})
	}
	if len(ops) == 0 {
		return true, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return true, err
	}
	_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "mizzen-injector"})
	return true, err
}
