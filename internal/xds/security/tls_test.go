package security

import "testing"

func TestInboundTLSContext(t *testing.T) {
	for _, http := range []bool{true, false} {
		ctx := InboundTLSContext(http)
		mustValidate(t, ctx)
		want := `
requireClientCertificate: true
commonTlsContext:
  tlsParams: {tlsMinimumProtocolVersion: TLSv1_2}
  tlsCertificateSdsSecretConfigs: [{name: default}]
  validationContextSdsSecretConfig: {name: ROOTCA}
`
		if http {
			want += "  alpnProtocols: [h2, http/1.1]\n"
		}
		assertJSON(t, ctx, want)
	}
}

func TestIstioMutualUpstream(t *testing.T) {
	ctx := IstioMutualUpstream("outbound_.9080_._.reviews.bookinfo.svc.cluster.local",
		[]string{"spiffe://cluster.local/ns/bookinfo/sa/reviews", "spiffe://cluster.local/ns/bookinfo/sa/reviews-v2"},
		[]string{"istio-peer-exchange", "istio", "h2"})
	mustValidate(t, ctx)
	assertJSON(t, ctx, `
sni: outbound_.9080_._.reviews.bookinfo.svc.cluster.local
commonTlsContext:
  tlsParams: {tlsMinimumProtocolVersion: TLSv1_2}
  tlsCertificateSdsSecretConfigs: [{name: default}]
  alpnProtocols: [istio-peer-exchange, istio, h2]
  combinedValidationContext:
    validationContextSdsSecretConfig: {name: ROOTCA}
    defaultValidationContext:
      matchTypedSubjectAltNames:
      - {sanType: URI, matcher: {exact: "spiffe://cluster.local/ns/bookinfo/sa/reviews"}}
      - {sanType: URI, matcher: {exact: "spiffe://cluster.local/ns/bookinfo/sa/reviews-v2"}}
`)
	// No SANs: any certificate signed by the mesh root.
	ctx = IstioMutualUpstream("sni", nil, IstioPeerALPN)
	mustValidate(t, ctx)
	if n := len(ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()); n != 0 {
		t.Errorf("%d SAN matchers without SANs", n)
	}
}
