package router

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// selfSigned returns a server certificate for "grpc.test" and its PEM.
func selfSigned(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "grpc.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"grpc.test"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM
}

// grpcBackend serves the standard health service on loopback.
func grpcBackend(t testing.TB, creds credentials.TransportCredentials) (string, *health.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String(), hs
}

func TestGRPCThroughRouter(t *testing.T) {
	cert, certPEM := selfSigned(t)
	plainAddr, plainHealth := grpcBackend(t, nil)
	tlsAddr, tlsHealth := grpcBackend(t, credentials.NewServerTLSFromCert(&cert))

	h2c := http2Cluster(staticCluster("h2c", plainAddr))
	withTLS := http2Cluster(staticCluster("tls", tlsAddr))
	sock, err := anyOfErr(&tlsv3.UpstreamTlsContext{Sni: "grpc.test", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	withTLS.TransportSocket = &corev3.TransportSocket{Name: upstream.TLSSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: sock}}
	set := buildSet(t, nil, h2c, withTLS)

	noTimeout := func(ra *routev3RouteAction) { ra.Timeout = durationpb.New(0) }
	vh := vhost("vh", []string{"*"},
		toCluster("missing", prefixMatch("/missing."), "no-such-cluster"),
		toCluster("h2c", prefixMatch("/"), "h2c", noTimeout),
	)
	vhTLS := vhost("vh-tls", []string{"secure"}, toCluster("tls", prefixMatch("/"), "tls", noTimeout))
	p := newProxy(t, routeConfig(vhTLS, vh), set)
	proxyAddr := strings.TrimPrefix(p.srv.URL, "http://")

	for _, tc := range []struct {
		name, authority string
		hs              *health.Server
	}{{"h2c upstream", "", plainHealth}, {"TLS upstream", "secure", tlsHealth}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if tc.authority != "" {
				opts = append(opts, grpc.WithAuthority(tc.authority))
			}
			conn, err := grpc.NewClient(proxyAddr, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := healthpb.NewHealthClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// Unary.
			resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check: %v %v", resp, err)
			}
			// A gRPC error travels in trailers.
			_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("Check(unknown): %v, want NotFound", err)
			}
			// Server streaming, with messages flowing as they are sent.
			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
			if err != nil {
				t.Fatal(err)
			}
			if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("first watch message: %v %v", m, err)
			}
			tc.hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_NOT_SERVING)
			defer tc.hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
			if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("second watch message: %v %v", m, err)
			}
		})
	}

	t.Run("local reply is a gRPC status", func(t *testing.T) {
		conn, err := grpc.NewClient(proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		err = conn.Invoke(context.Background(), "/missing.Service/Method", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("missing cluster: %v, want Unavailable", err)
		}
	})
}
