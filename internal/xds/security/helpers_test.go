package security

import (
	"encoding/json"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

const rootNS = "istio-system"

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// meta builds object metadata; age orders objects (smaller is older).
func meta(kind model.Kind, ns, name string, age int) model.Meta {
	return model.Meta{Kind: kind, Namespace: ns, Name: name, CreationTimestamp: epoch.Add(time.Duration(age) * time.Minute)}
}

func newPush() *model.PushContext {
	return &model.PushContext{DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: rootNS}
}

func sidecar(ns string, labels map[string]string) *model.Proxy {
	return &model.Proxy{
		ID: "sidecar~10.0.0.5~pod." + ns + "~" + ns + ".svc.cluster.local", Type: model.SidecarProxy,
		IPs: []string{"10.0.0.5"}, PodName: "pod", Namespace: ns, ServiceAccount: "default",
		Labels: labels, ConfigNamespace: ns,
	}
}

// validator is every generated Envoy proto.
type validator interface{ Validate() error }

func mustValidate(t testing.TB, msgs ...validator) {
	t.Helper()
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			t.Fatalf("%T does not validate: %v", m, err)
		}
	}
}

// toJSON renders a proto as a generic JSON value for comparisons.
func toJSON(t testing.TB, m proto.Message) any {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// assertJSON compares a proto with an expected value written as YAML.
func assertJSON(t testing.TB, m proto.Message, wantYAML string) {
	t.Helper()
	var want any
	if err := yaml.Unmarshal([]byte(wantYAML), &want); err != nil {
		t.Fatalf("bad expectation: %v", err)
	}
	got := toJSON(t, m)
	if !reflect.DeepEqual(normalize(got), normalize(want)) {
		gb, _ := yaml.Marshal(got)
		t.Errorf("got:\n%s\nwant:\n%s", gb, wantYAML)
	}
}

// normalize makes numbers comparable between YAML and JSON decoding.
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

type (
	securityPA = securityv1beta1.PeerAuthentication
	securityRA = securityv1beta1.RequestAuthentication
	securityAP = securityv1beta1.AuthorizationPolicy
)

// testJWKS is a valid public key set (its private key was not kept).
const testJWKS = `{"keys":[{"use":"sig","kty":"EC","kid":"test-key","crv":"P-256","alg":"ES256","x":"5xh-wDcDcksRVg0LjpvD-pkcgiOZyWHwo_w16OiRu60","y":"rtPAcfcrNlRK3QtnmQFarqA9X2HSskmVmrElm5Xv2xY"}]}`
