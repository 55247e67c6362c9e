package discovery

import (
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// Secret keys a gateway credential may use: the kubernetes.io/tls ones, or
// Istio's generic cert/key/cacert.
var credentialKeys = []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, corev1.ServiceAccountRootCAKey, "cert", "key", "cacert"}

// CACertSuffix names the Secret holding a credential's CA bundle.
const CACertSuffix = "-cacert"

// stripSecret keeps, of a Secret that may be a gateway credential
// (kubernetes.io/tls, or Opaque with credential keys), only those keys;
// every other Secret keeps its name and no data, to bound memory.
func stripSecret(s *corev1.Secret) *corev1.Secret {
	out := &corev1.Secret{Type: s.Type}
	out.Name, out.Namespace, out.UID, out.ResourceVersion = s.Name, s.Namespace, s.UID, s.ResourceVersion
	if s.Type != corev1.SecretTypeTLS && s.Type != corev1.SecretTypeOpaque && s.Type != "" {
		return out
	}
	for _, k := range credentialKeys {
		if v, ok := s.Data[k]; ok {
			if out.Data == nil {
				out.Data = map[string][]byte{}
			}
			out.Data[k] = v
		}
	}
	return out
}

// credentialNames are the Secret names the Gateways refer to.
func credentialNames(gws []model.Config[*networking.Gateway]) map[string]bool {
	names := map[string]bool{}
	add := func(n string) {
		if n = strings.TrimPrefix(n, "kubernetes://"); n != "" {
			names[n] = true
		}
	}
	for _, gw := range gws {
		for _, s := range gw.Spec.GetServers() {
			t := s.GetTls()
			add(t.GetCredentialName())
			for _, n := range t.GetCredentialNames() {
				add(n)
			}
			add(t.GetCaCertCredentialName())
		}
	}
	return names
}

// buildCredentials turns the Secrets named by Gateways (in any namespace:
// a credential serves the gateways of its own namespace) into credentials;
// the CA bundle comes from the Secret's ca.crt / cacert, else from the
// "<name>-cacert" Secret. A name that is itself a "-cacert" Secret with no
// key pair gives a CA-only credential.
func buildCredentials(names map[string]bool, secrets map[string]*corev1.Secret) map[string]*model.Credential {
	out := map[string]*model.Credential{}
	keys := make([]string, 0, len(secrets))
	for k := range secrets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := secrets[k]
		if !names[s.Name] {
			continue
		}
		c := &model.Credential{Namespace: s.Namespace, Name: s.Name}
		c.CertChain = first(s.Data, corev1.TLSCertKey, "cert")
		c.PrivateKey = first(s.Data, corev1.TLSPrivateKeyKey, "key")
		c.CACert = first(s.Data, corev1.ServiceAccountRootCAKey, "cacert")
		if len(c.CACert) == 0 {
			if ca := secrets[s.Namespace+"/"+s.Name+CACertSuffix]; ca != nil {
				c.CACert = first(ca.Data, corev1.ServiceAccountRootCAKey, "cacert")
			}
		}
		if len(c.CertChain) == 0 && len(c.PrivateKey) == 0 && len(c.CACert) == 0 {
			continue
		}
		out[k] = c
	}
	return out
}

func first(data map[string][]byte, keys ...string) []byte {
	for _, k := range keys {
		if v := data[k]; len(v) > 0 {
			return v
		}
	}
	return nil
}
