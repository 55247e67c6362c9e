package validation

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// parse decodes a YAML object and returns it with its group, version and
// kind.
func parse(t *testing.T, doc string) (schema.GroupVersionKind, *unstructured.Unstructured) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	return obj.GroupVersionKind(), obj
}

// obj builds a YAML object of kind with the given spec (YAML, indented by
// two spaces).
func obj(apiVersion, kind, spec string) string {
	return "apiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata:\n  name: x\n  namespace: default\nspec:\n" + spec
}

// Valid objects from Istio's tasks (Bookinfo, ingress, egress, security),
// in every served version.
var validObjects = map[string]string{
	"virtualservice weighted": `
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
`,
	"virtualservice gateway": `
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    - uri: {regex: '^/api/v[0-9]+/products$'}
    - uri: {}
    - headers:
        X-Canary: {}
        "@request.auth.claims.groups": {exact: beta}
    route:
    - destination:
        host: productpage
        port: {number: 9080}
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,503"}
    fault:
      delay: {fixedDelay: 7s, percentage: {value: 100}}
    mirror: {host: productpage, subset: v2}
    mirrorPercentage: {value: 50}
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      allowMethods: [GET, POST]
      maxAge: 24h
    headers:
      request:
        set: {x-mesh: mizzen}
  - match:
    - uri: {prefix: /old}
    redirect: {uri: /new, redirectCode: 301}
  tcp:
  - match: [{port: 27017}]
    route:
    - destination: {host: mongo, port: {number: 5555}}
`,
	"virtualservice tls": `
  hosts: ["*.example.com"]
  gateways: [mesh]
  tls:
  - match:
    - port: 443
      sniHosts: [www.example.com]
    route:
    - destination: {host: www.example.com}
`,
	"destinationrule": `
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user}
`,
	"gateway": `
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [bookinfo/httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
  - port: {number: 8443, name: mtls, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: MUTUAL, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem, caCertificates: /etc/certs/ca.pem}
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
`,
	"serviceentry": `
  hosts: [api.dropboxapi.com, www.googleapis.com]
  ports:
  - {number: 443, name: https, protocol: TLS}
  resolution: DNS
  location: MESH_EXTERNAL
`,
	"serviceentry static": `
  hosts: [mymongodb.somedomain]
  addresses: [192.192.192.192/24]
  ports:
  - {number: 27018, name: mongodb, protocol: MONGO}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
    ports: {mongodb: 27019}
`,
	"sidecar": `
  workloadSelector:
    labels: {app: ratings}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: somename}
    defaultEndpoint: 127.0.0.1:8080
  egress:
  - port: {number: 9080, protocol: HTTP, name: egresshttp}
    hosts: [prod-us1/*]
  - hosts: [istio-system/*, ./*]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`,
}

var validSecurity = map[string]string{
	"PeerAuthentication": `
  selector:
    matchLabels: {app: finance}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
`,
	"AuthorizationPolicy": `
  selector:
    matchLabels: {app: httpbin}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/sleep, "*/ns/foo/sa/bar"]
        notNamespaces: [bar]
        ipBlocks: [10.0.0.0/8, 1.2.3.4]
    to:
    - operation:
        methods: [GET]
        paths: ["/info*", "/api/{*}/x", "/files/{**}"]
        ports: ["8000"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: source.ip
      notValues: [10.1.2.3/32]
`,
	"RequestAuthentication": `
  selector:
    matchLabels: {app: httpbin}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.20/security/tools/jwt/samples/jwks.json
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]
  - issuer: other
    jwks: '{"keys":[{"kty":"RSA","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}'
`,
	"Telemetry": `
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10.5
    customTags:
      cluster: {literal: {value: east}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        request_host: {operation: REMOVE}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
`,
}

func TestValidObjectsAccepted(t *testing.T) {
	kindOf := map[string]string{
		"virtualservice": "VirtualService", "destinationrule": "DestinationRule", "gateway": "Gateway",
		"serviceentry": "ServiceEntry", "sidecar": "Sidecar",
	}
	for name, spec := range validObjects {
		k := kindOf[strings.Fields(name)[0]]
		for _, v := range []string{"v1", "v1beta1", "v1alpha3"} {
			gvk, o := parse(t, obj("networking.istio.io/"+v, k, spec))
			if err := Validate(gvk, o); err != nil {
				t.Errorf("%s %s: want valid, got:\n%v", name, v, err)
			}
		}
	}
	for k, spec := range validSecurity {
		group, versions := "security.istio.io", []string{"v1", "v1beta1"}
		if k == "Telemetry" {
			group, versions = "telemetry.istio.io", []string{"v1", "v1alpha1"}
		}
		for _, v := range versions {
			gvk, o := parse(t, obj(group+"/"+v, k, spec))
			if err := Validate(gvk, o); err != nil {
				t.Errorf("%s %s: want valid, got:\n%v", k, v, err)
			}
		}
	}
}

func TestUnsupportedKind(t *testing.T) {
	for _, gvk := range []schema.GroupVersionKind{
		{Group: "networking.istio.io", Version: "v1", Kind: "EnvoyFilter"},
		{Group: "networking.istio.io", Version: "v2", Kind: "VirtualService"},
		{Group: "telemetry.istio.io", Version: "v1beta1", Kind: "Telemetry"},
	} {
		if err := Validate(gvk, &unstructured.Unstructured{Object: map[string]any{}}); !errors.Is(err, ErrUnsupportedKind) {
			t.Errorf("%s: want ErrUnsupportedKind, got %v", gvk, err)
		}
	}
}

func TestErrorsJoinedWithPaths(t *testing.T) {
	gvk, o := parse(t, obj("networking.istio.io/v1", "DestinationRule", `
  host: "bad host"
  subsets:
  - name: v1
  - name: v1
`))
	errs := FieldErrors(Validate(gvk, o))
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	want := []string{"spec.host", "spec.subsets[1].name"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("fields: got %v, want %v", got, want)
	}
}

func TestValidateJSON(t *testing.T) {
	gvk := schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "Gateway"}
	err := ValidateJSON(gvk, []byte(`{"spec":{"servers":[{"port":{"number":80,"protocol":"HTTP"}}]}}`))
	if err == nil || !strings.Contains(err.Error(), "spec.servers[0].hosts: a server needs at least one host") {
		t.Errorf("got %v", err)
	}
	if err := ValidateJSON(gvk, []byte(`[1]`)); err == nil {
		t.Error("a JSON list: want an error")
	}
}

func TestDeprecatedFieldsWarn(t *testing.T) {
	gvk, o := parse(t, obj("networking.istio.io/v1", "VirtualService", `
  hosts: [a]
  http:
  - route:
    - destination: {host: a}
    mirror: {host: b}
    mirrorPercent: 10
    corsPolicy:
      allowOrigin: ["*"]
`))
	warnings, err := ValidateWithWarnings(gvk, o)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"spec.http[0].corsPolicy.allowOrigin: allowOrigin is deprecated",
		"spec.http[0].mirrorPercent: mirrorPercent is deprecated",
	}
	if strings.Join(warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(want, "\n"))
	}
	for name, spec := range validObjects {
		gvk, o := parse(t, obj("networking.istio.io/v1", "VirtualService", spec))
		if w, _ := ValidateWithWarnings(gvk, o); len(w) > 0 && strings.HasPrefix(name, "virtualservice") {
			t.Errorf("%s: unexpected warnings %v", name, w)
		}
	}
}

func BenchmarkValidateVirtualService(b *testing.B) {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(obj2(validObjects["virtualservice gateway"])), &obj.Object); err != nil {
		b.Fatal(err)
	}
	gvk := obj.GroupVersionKind()
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(gvk, obj); err != nil {
			b.Fatal(err)
		}
	}
}

func obj2(spec string) string { return obj("networking.istio.io/v1", "VirtualService", spec) }
