package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

func lbEndpoint(addr string, md map[string]map[string]any) *endpointv3.LbEndpoint {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	p, _ := strconv.Atoi(port)
	le := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
		}}},
	}}}
	if md != nil {
		le.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		for k, v := range md {
			s, err := structpb.NewStruct(v)
			if err != nil {
				panic(err)
			}
			le.Metadata.FilterMetadata[k] = s
		}
	}
	return le
}

func cla(name string, eps ...*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

// staticCluster is a STATIC cluster over addrs.
func staticCluster(name string, addrs ...string) *clusterv3.Cluster {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		eps = append(eps, lbEndpoint(a, nil))
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       cla(name, eps...),
	}
}

func snapshot(clusters ...*clusterv3.Cluster) *config.Snapshot {
	s := &config.Snapshot{Clusters: map[string]*clusterv3.Cluster{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
	for _, c := range clusters {
		s.Clusters[c.GetName()] = c
	}
	return s
}

func mustBuild(t testing.TB, snap *config.Snapshot, prev *Set, secrets config.Secrets) *Set {
	t.Helper()
	s, err := Build(snap, prev, secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// backend is a loopback HTTP server answering with its name.
func backend(t testing.TB, name string, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func addrOf(srv *httptest.Server) string {
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func get(t testing.TB, c *Cluster, opts RequestOptions) (*http.Response, *Host, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://svc/", nil)
	return c.RoundTrip(req, opts)
}

// pki is a test mesh CA issuing workload certificates.
type pki struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	pool   *x509.CertPool
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{caCert: cert, caKey: key, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
}

// issue returns a key pair for the SPIFFE ID and DNS names (also with
// 127.0.0.1 as IP SAN).
func (p *pki) issue(t testing.TB, spiffe string, dns ...string) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "workload"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dns, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if spiffe != "" {
		u, _ := url.Parse(spiffe)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM, keyPEM
}

// staticSecrets implements config.Secrets.
type staticSecrets struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

func (s *staticSecrets) WorkloadCertificate() (*tls.Certificate, error) { return &s.cert, nil }
func (s *staticSecrets) RootCAs() *x509.CertPool                        { return s.roots }

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
