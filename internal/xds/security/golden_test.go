package security

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/golden"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// representativePush holds a mesh-wide STRICT policy, a PERMISSIVE
// namespace, a workload port with DISABLE, ALLOW/DENY/AUDIT policies with
// every source, operation and condition kind, and JWT providers with
// inline keys and an in-cluster JWKS URI.
func representativePush(t testing.TB) *model.PushContext {
	push := pushWithJWKSService()
	push.PeerAuthentications = []model.Config[*securityv1beta1PA]{
		pa(rootNS, "default", 0, nil, strict, nil),
		pa("bookinfo", "default", 1, nil, permissive, nil),
		pa("bookinfo", "reviews-metrics", 2, map[string]string{"app": "reviews"}, unset, map[uint32]paMode{9090: disable}),
	}
	push.RequestAuthentications = []model.Config[*securityv1beta1RA]{
		ra(t, rootNS, "mesh-jwt", 0, `
jwtRules:
- issuer: https://accounts.example.com
  audiences: [bookinfo]
  jwks: '`+testJWKS+`'
  fromHeaders: [{name: Authorization, prefix: "Bearer "}]
  outputClaimToHeaders: [{header: x-user-group, claim: group}]`),
		ra(t, "bookinfo", "reviews-jwt", 1, `
selector: {matchLabels: {app: reviews}}
jwtRules:
- issuer: https://auth.bookinfo
  jwksUri: http://jwks.auth.svc.cluster.local:8080/.well-known/jwks.json
  fromParams: [access_token]
  forwardOriginalToken: true
  outputPayloadToHeader: x-jwt-payload
- issuer: https://external.example.com
  jwksUri: https://external.example.com/jwks`),
	}
	push.AuthorizationPolicies = []model.Config[*securityv1beta1AP]{
		ap(t, rootNS, "deny-blocked", 0, `
action: DENY
rules:
- from: [{source: {ipBlocks: ["203.0.113.0/24"], notNamespaces: [istio-system]}}]
- to: [{operation: {methods: [DELETE], paths: ["/admin*"]}}]
  when: [{key: "request.auth.claims[role]", notValues: [admin]}]`),
		ap(t, "bookinfo", "reviews-allow", 1, `
selector: {matchLabels: {app: reviews}}
action: ALLOW
rules:
- from:
  - source:
      principals: [cluster.local/ns/bookinfo/sa/productpage, "*-gateway-service-account"]
      notPrincipals: [cluster.local/ns/bookinfo/sa/blocked]
      namespaces: [bookinfo]
      remoteIpBlocks: ["198.51.100.0/24"]
      notRemoteIpBlocks: ["198.51.100.7"]
  - source:
      requestPrincipals: ["https://auth.bookinfo/*"]
      notRequestPrincipals: ["https://auth.bookinfo/banned"]
  to:
  - operation:
      hosts: [reviews.bookinfo.svc.cluster.local, "reviews*"]
      notHosts: [internal.reviews]
      ports: ["9080"]
      notPorts: ["9091"]
      methods: [GET, HEAD]
      notMethods: [TRACE]
      paths: ["/reviews/*", "/health", "*.json", "/users/{*}/reviews"]
      notPaths: ["/reviews/internal*"]
  when:
  - {key: "request.headers[x-tenant]", values: [acme, "*-corp"], notValues: [evil]}
  - {key: source.ip, values: ["10.0.0.0/8"]}
  - {key: remote.ip, notValues: ["192.0.2.1"]}
  - {key: source.namespace, values: [bookinfo]}
  - {key: source.principal, values: [cluster.local/ns/bookinfo/sa/productpage]}
  - {key: request.auth.principal, values: ["https://auth.bookinfo/alice"]}
  - {key: request.auth.audiences, values: [bookinfo]}
  - {key: request.auth.presenter, values: [web-client]}
  - {key: "request.auth.claims[groups]", values: [reviewers]}
  - {key: destination.ip, values: ["10.1.0.0/16"]}
  - {key: destination.port, values: ["9080"], notValues: ["15000"]}
- to: [{operation: {ports: ["9090"]}}]`),
		ap(t, "bookinfo", "audit-writes", 2, `
action: AUDIT
rules: [{to: [{operation: {methods: [POST, PUT, PATCH]}}]}]`),
		ap(t, "bookinfo", "ext-authz", 3, `{action: CUSTOM, provider: {name: opa}, rules: [{}]}`),
	}
	return push
}

// Aliases keep the literal above short.
type (
	securityv1beta1PA = securityPA
	securityv1beta1RA = securityRA
	securityv1beta1AP = securityAP
)

func protoYAML(t testing.TB, m proto.Message) []byte {
	t.Helper()
	j, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func TestGolden(t *testing.T) {
	push := representativePush(t)
	proxy := sidecar("bookinfo", map[string]string{"app": "reviews", "version": "v1"})
	var out bytes.Buffer
	doc := func(title string, body []byte) {
		fmt.Fprintf(&out, "---\n# %s\n", title)
		out.Write(body)
	}
	modes := map[uint32]string{}
	for _, p := range []uint32{9080, 9090} {
		modes[p] = InboundMTLSMode(push, proxy, p).String()
	}
	y, _ := yaml.Marshal(map[string]any{"mtlsModeByPort": modes})
	doc("mTLS modes", y)
	for i, f := range InboundHTTPFilters(push, proxy, 9080) {
		mustValidate(t, f)
		doc(fmt.Sprintf("HTTP filter %d", i), protoYAML(t, f))
	}
	for i, f := range InboundNetworkFilters(push, proxy, 9090) {
		mustValidate(t, f)
		doc(fmt.Sprintf("network filter %d", i), protoYAML(t, f))
	}
	y, _ = yaml.Marshal(map[string]any{"skipped": SkippedFor(push, proxy)})
	doc("skipped", y)
	golden.AssertYAML(t, "testdata/representative.yaml", out.Bytes())
}
