package validation

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// create creates the YAML object doc in namespace ns.
func create(ns, doc string, opts ...client.CreateOption) (*unstructured.Unstructured, error) {
	o := mustObject(doc)
	o.SetNamespace(ns)
	return o, k.Create(context.Background(), o, opts...)
}

// TestInvalidRefused creates invalid objects as a user would and checks that
// the API server refuses each with a message that names the field. The
// layer that refuses is noted: most rules are the webhook's, but the Istio
// CRDs' own schema (required fields, maximums, CEL rules) already refuses
// missing server hosts, bad durations, ports out of range, percentages over
// 100 and non-HTTP jwksUris before admission webhooks run, so those never
// reach the webhook (which checks them too, for callers of Validate).
func TestInvalidRefused(t *testing.T) {
	ns := createNamespace(t, "invalid")
	const webhook = `admission webhook "validation.istio.io" denied the request: configuration is invalid: `
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"weights sum to 90", weights90, []string{webhook + "spec.http[0].route[1].weight: weights sum to 90, must be 100"}},
		{"duplicate subset", `
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v2}
`, []string{webhook + `spec.subsets[1].name: duplicate subset name "v1"`}},
		// The CRD's schema requires hosts.
		{"gateway without hosts (CRD schema)", `
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
`, []string{"spec.servers[0].hosts: Required value"}},
		{"gateway with an empty host list", `
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw2}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: []
`, []string{webhook + "spec.servers[0].hosts: a server needs at least one host"}},
		{"bad regex", `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: regex}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "/api/(v1"}
    route:
    - destination: {host: reviews}
`, []string{webhook + `spec.http[0].match[0].uri.regex: invalid regex "/api/(v1": missing closing )`}},
		{"several problems at once", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["spiffe://cluster.local/ns/a/sa/b"], ipBlocks: ["10.0.0.0/40"]}
`, []string{
			webhook + `spec.rules[0].from[0].source.principals[0]: principal "spiffe://cluster.local/ns/a/sa/b" must not start with spiffe://`,
			`; spec.rules[0].from[0].source.ipBlocks[0]: invalid CIDR "10.0.0.0/40"`,
		}},
		{"jwks does not parse", `
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules:
  - issuer: issuer
    jwks: '{"keys": [{"kty": "XYZ"}]}'
`, []string{webhook + "spec.jwtRules[0].jwks: not a valid JSON Web Key Set"}},
		{"custom tag without a source", `
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: tracing}
spec:
  tracing:
  - customTags:
      cluster: {}
`, []string{webhook + "spec.tracing[0].customTags[cluster]: one of literal, environment, header or formatter is required"}},
		// Refused by the CRD's own schema before admission webhooks run.
		{"sampling over 100 (CRD schema)", `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tracing2}
spec:
  tracing:
  - randomSamplingPercentage: 150
`, []string{"spec.tracing[0].randomSamplingPercentage: Invalid value: 150"}},
		{"jwks uri scheme (CRD schema)", `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt3}
spec:
  jwtRules:
  - issuer: issuer
    jwksUri: ftp://example.com/jwks.json
`, []string{"spec.jwtRules[0].jwksUri: Invalid value", "url must have scheme http:// or https://"}},
		{"bad duration (CRD schema)", `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: timeout}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: ten seconds
`, []string{`spec.http[0].timeout: Invalid value`, "must be a valid duration greater than 1ms"}},
		{"port out of range (CRD schema)", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [api.example.com]
  ports: [{number: 70000, name: https, protocol: TLS}]
`, []string{"spec.ports[0].number", "port must be between 1-65535"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := create(ns, tc.doc)
			if err == nil {
				t.Fatal("created; want it refused")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refused with\n  %v\nwant it to contain\n  %s", err, w)
				}
			}
		})
	}
}

// TestUnknownFields documents which layer handles a misspelt field: the
// Istio CRDs have structural schemas without
// x-kubernetes-preserve-unknown-fields in spec, so the API server prunes
// unknown fields before admission (the webhook never sees them). With
// fieldValidation=Strict (kubectl's default) the API server refuses the
// object naming the field; without it (client-go's default, Warn) the field
// is dropped with a warning and the object stored without it.
func TestUnknownFields(t *testing.T) {
	ns := createNamespace(t, "unknown")
	doc := `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: misspelt}
spec:
  host: reviews
  subsets:
  - name: v1
    lables: {version: v1}
`
	_, err := create(ns, doc, client.FieldValidation("Strict"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.subsets[0].lables"`) {
		t.Errorf("Strict: want the API server to refuse naming spec.subsets[0].lables, got %v", err)
	}
	o, err := create(ns, doc)
	if err != nil {
		t.Fatalf("default field validation: %v", err)
	}
	subsets, _, _ := unstructured.NestedSlice(o.Object, "spec", "subsets")
	if len(subsets) != 1 || subsets[0].(map[string]any)["lables"] != nil {
		t.Errorf("stored subsets %v: want the unknown field pruned", subsets)
	}
}

// validObjects are objects from Istio's tasks, created in each served
// version.
var validObjects = []struct {
	group, kind string
	versions    []string
	spec        string
}{
	{"networking.istio.io", "VirtualService", []string{"v1", "v1beta1", "v1alpha3"}, `
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v3}
      weight: 25
    timeout: 1m30s
    retries: {attempts: 3, perTryTimeout: 2s}
`},
	{"networking.istio.io", "DestinationRule", []string{"v1", "v1beta1", "v1alpha3"}, `
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`},
	{"networking.istio.io", "Gateway", []string{"v1", "v1beta1", "v1alpha3"}, `
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
`},
	{"networking.istio.io", "ServiceEntry", []string{"v1", "v1beta1", "v1alpha3"}, `
  hosts: [api.dropboxapi.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
`},
	{"networking.istio.io", "Sidecar", []string{"v1", "v1beta1", "v1alpha3"}, `
  egress:
  - hosts: ["./*", "istio-system/*"]
`},
	{"security.istio.io", "PeerAuthentication", []string{"v1", "v1beta1"}, `
  mtls: {mode: STRICT}
`},
	{"security.istio.io", "AuthorizationPolicy", []string{"v1", "v1beta1"}, `
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/sleep]}
    to:
    - operation: {methods: [GET], paths: ["/info*"]}
`},
	{"security.istio.io", "RequestAuthentication", []string{"v1", "v1beta1"}, `
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://example.com/jwks.json
`},
	{"telemetry.istio.io", "Telemetry", []string{"v1", "v1alpha1"}, `
  tracing:
  - randomSamplingPercentage: 10
`},
}

// TestValidAccepted creates valid objects of every kind in every served
// version.
func TestValidAccepted(t *testing.T) {
	ns := createNamespace(t, "valid")
	for _, v := range validObjects {
		for _, version := range v.versions {
			doc := fmt.Sprintf("apiVersion: %s/%s\nkind: %s\nmetadata: {name: %s}\nspec:\n%s",
				v.group, version, v.kind, strings.ToLower(v.kind)+"-"+version, v.spec)
			if _, err := create(ns, doc); err != nil {
				t.Errorf("%s %s: %v", v.kind, version, err)
			}
		}
	}
}

// TestUpdateValidated checks that an update that breaks an object is
// refused, not only a create.
func TestUpdateValidated(t *testing.T) {
	ns := createNamespace(t, "update")
	o, err := create(ns, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(o.Object, []any{map[string]any{
		"port": map[string]any{"number": int64(443), "name": "https", "protocol": "HTTPS"}, "hosts": []any{"*"},
	}}, "spec", "servers"); err != nil {
		t.Fatal(err)
	}
	err = k.Update(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "spec.servers[0].tls: tls is required for protocol HTTPS") {
		t.Errorf("update: want it refused naming spec.servers[0].tls, got %v", err)
	}
	if err := k.Delete(context.Background(), o); err != nil {
		t.Errorf("delete: %v", err)
	}
}

// TestRevisionSelection checks the objectSelectors: the default revision
// validates unlabelled objects and those labelled istio.io/rev=default,
// and leaves objects of another revision (here one that is not installed)
// to that revision's webhook.
func TestRevisionSelection(t *testing.T) {
	ns := createNamespace(t, "revision")
	for _, tc := range []struct {
		rev     string
		webhook string // "" when nothing validates it
	}{
		{"", "validation.istio.io"},
		{"default", "rev.validation.istio.io"},
		{"canary", ""},
	} {
		o := mustObject(weights90)
		o.SetName("rev-" + tc.rev + "x")
		o.SetNamespace(ns)
		if tc.rev != "" {
			o.SetLabels(map[string]string{"istio.io/rev": tc.rev})
		}
		err := k.Create(context.Background(), o)
		switch {
		case tc.webhook == "" && err != nil:
			t.Errorf("istio.io/rev=%s: want no default-revision webhook to validate it, got %v", tc.rev, err)
		case tc.webhook != "" && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("admission webhook %q denied", tc.webhook))):
			t.Errorf("istio.io/rev=%q: want %s to refuse it, got %v", tc.rev, tc.webhook, err)
		}
	}
}

// TestMetrics checks the counters after the other tests sent the webhook
// valid and invalid objects.
func TestMetrics(t *testing.T) {
	if _, err := create(createNamespace(t, "metrics"), weights90); err == nil {
		t.Fatal("invalid VirtualService created")
	}
	mfs, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["group"] == "networking.istio.io" && labels["resource"] == "virtualservices" && m.GetCounter().GetValue() > 0 {
				found[mf.GetName()+"/"+labels["reason"]] = true
			}
		}
	}
	if !found["galley_validation_failed/invalid_resource"] {
		t.Errorf("no galley_validation_failed{resource=virtualservices,reason=invalid_resource}: %v", found)
	}
}
