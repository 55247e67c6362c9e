package security

import (
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// ALPN values of mesh traffic.
var (
	// InboundHTTPALPN is what an inbound mTLS chain for an HTTP port offers.
	InboundHTTPALPN = []string{"h2", "http/1.1"}
	// IstioPeerALPN is what a client sidecar offers to a mesh endpoint
	// (docs/xds.md: "istio-peer-exchange, istio", plus h2 for HTTP/2).
	IstioPeerALPN = []string{"istio-peer-exchange", "istio"}
)

func meshCommonTLS(alpn []string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: xds.SecretDefault}},
		AlpnProtocols:                  append([]string(nil), alpn...),
	}
}

// InboundTLSContext is the DownstreamTlsContext of an inbound mTLS chain:
// the workload certificate (SDS "default"), client certificates required
// and verified against the mesh root (SDS "ROOTCA"). Peer identities are
// not restricted here: AuthorizationPolicy decides who may call. ALPN
// offers h2 and http/1.1 when the chain serves HTTP.
func InboundTLSContext(alpnHTTP bool) *tlsv3.DownstreamTlsContext {
	var alpn []string
	if alpnHTTP {
		alpn = InboundHTTPALPN
	}
	common := meshCommonTLS(alpn)
	common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
		ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: xds.SecretRootCA},
	}
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         common,
		RequireClientCertificate: wrapperspb.Bool(true),
	}
}

// IstioMutualUpstream is the UpstreamTlsContext of ISTIO_MUTUAL: the
// workload certificate (SDS "default"), the peer verified against the mesh
// root (SDS "ROOTCA") and, when sans is not empty, its certificate must
// carry one of them as a URI SAN (SPIFFE IDs, matched exactly).
func IstioMutualUpstream(sni string, sans []string, alpn []string) *tlsv3.UpstreamTlsContext {
	defaults := &tlsv3.CertificateValidationContext{}
	for _, san := range sans {
		defaults.MatchTypedSubjectAltNames = append(defaults.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: san}},
		})
	}
	common := meshCommonTLS(alpn)
	common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         defaults,
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: xds.SecretRootCA},
		},
	}
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: sni}
}
