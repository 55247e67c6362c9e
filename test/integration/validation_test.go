package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
)

// The API server rejects invalid MeshInstalls at apply time, with a message
// that names the field.
func TestInvalidSpecsAreRejected(t *testing.T) {
	cases := []struct {
		name, spec string
		want       []string
	}{
		{"unknown profile", `{profile: tiny}`, []string{"spec.profile", `"tiny"`, "demo"}},
		{"bad namespace name", `{namespace: Istio_System}`, []string{"spec.namespace"}},
		{"negative replicas", `{components: {controlPlane: {replicas: -1}}}`, []string{"spec.components.controlPlane.replicas", "0"}},
		{"autoscaling bounds", `{components: {injector: {autoscaling: {minReplicas: 5, maxReplicas: 2}}}}`,
			[]string{"spec.components.injector.autoscaling", "minReplicas must not exceed"}},
		{"gateway service type", `{components: {ingressGateways: [{name: gw, service: {type: External}}]}}`,
			[]string{"spec.components.ingressGateways[0].service.type", "External"}},
		{"nodePort on ClusterIP", `{components: {ingressGateways: [{name: gw, service: {type: ClusterIP, ports: [{name: http, port: 80, nodePort: 30080}]}}]}}`,
			[]string{"nodePort needs service.type NodePort"}},
		{"gateway name shared by ingress and egress", `{components: {ingressGateways: [{name: gw}], egressGateways: [{name: gw}]}}`,
			[]string{"spec.components", "cannot share a name"}},
		{"duplicate gateway", `{components: {ingressGateways: [{name: gw}, {name: gw}]}}`,
			[]string{"spec.components.ingressGateways[1]", "Duplicate value"}},
		{"bad port", `{components: {ingressGateways: [{name: gw, service: {ports: [{name: http, port: 70000}]}}]}}`,
			[]string{"spec.components.ingressGateways[0].service.ports[0].port"}},
		{"revision default", `{revision: default}`, []string{"spec.revision", "empty revision"}},
		{"sampling above 100", `{meshConfig: {defaultConfig: {tracing: {sampling: 150}}}}`,
			[]string{"spec.meshConfig.defaultConfig.tracing.sampling"}},
		{"outbound policy", `{meshConfig: {outboundTrafficPolicy: {mode: DENY}}}`,
			[]string{"spec.meshConfig.outboundTrafficPolicy.mode", "ALLOW_ANY"}},
		{"bad version", `{version: latest}`, []string{"spec.version"}},
		{"unknown field", `{profiles: demo}`, []string{"unknown field", "spec.profiles"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Sent as written, unknown fields included, as kubectl apply would.
			mi := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte("apiVersion: install.mizzen.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: invalid}\nspec: "+tc.spec), &mi.Object); err != nil {
				t.Fatal(err)
			}
			err := k.Create(context.Background(), mi, client.FieldValidation("Strict"))
			if err == nil {
				_ = k.Delete(context.Background(), mi)
				t.Fatalf("the API server accepted %s", tc.spec)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err.Error(), w)
				}
			}
		})
	}
}

// spec.namespace cannot change once set, and defaults to istio-system.
func TestNamespaceIsImmutableAndDefaulted(t *testing.T) {
	install(t, "metadata: {name: immutable}\nspec: {profile: empty}")
	mi := &v1alpha1.MeshInstall{}
	if err := k.Get(context.Background(), client.ObjectKey{Name: "immutable"}, mi); err != nil {
		t.Fatal(err)
	}
	if mi.Spec.Namespace != "istio-system" || mi.Spec.Profile != "empty" {
		t.Errorf("defaults: namespace %q profile %q", mi.Spec.Namespace, mi.Spec.Profile)
	}
	var err error
	for range 20 { // the operator adds its finalizer meanwhile: retry conflicts
		if err = k.Get(context.Background(), client.ObjectKey{Name: "immutable"}, mi); err != nil {
			t.Fatal(err)
		}
		mi.Spec.Namespace = "elsewhere"
		if err = k.Update(context.Background(), mi); !apierrors.IsConflict(err) {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "spec.namespace is immutable") {
		t.Fatalf("changing spec.namespace: err = %v, want the immutability message", err)
	}
	// A MeshInstall without a profile gets the default profile.
	install(t, "metadata: {name: defaulted}\nspec: {namespace: mesh-defaulted, components: {ingressGateways: [{name: istio-ingressgateway, enabled: false}]}}")
	if err := k.Get(context.Background(), client.ObjectKey{Name: "defaulted"}, mi); err != nil {
		t.Fatal(err)
	}
	if mi.Spec.Profile != "default" {
		t.Errorf("profile defaulted to %q, want default", mi.Spec.Profile)
	}
}

func rawJSON(s string) *apiextensionsv1.JSON {
	if !json.Valid([]byte(s)) {
		panic("invalid JSON: " + s)
	}
	return &apiextensionsv1.JSON{Raw: []byte(s)}
}
