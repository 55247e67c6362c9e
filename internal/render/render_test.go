package render

import (
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/golden"
	"github.com/mizzen-mesh/mizzen/internal/profile"
)

var testOptions = Options{Version: "0.1.0", Hub: "ghcr.io/mizzen-mesh", Image: "mizzen"}

func renderSpec(t *testing.T, in string) *Result {
	t.Helper()
	user := &v1alpha1.MeshInstallSpec{}
	if err := yaml.UnmarshalStrict([]byte(in), user); err != nil {
		t.Fatal(err)
	}
	res, err := RenderUserSpec("mesh", user, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestRenderGolden keeps what each profile renders in testdata/. The Istio
// CRDs are generated from istio.io/api and listed by name only.
func TestRenderGolden(t *testing.T) {
	cases := map[string]string{
		"demo":    "profile: demo",
		"default": "profile: default",
		"minimal": "profile: minimal",
		"empty":   "profile: empty",
		"canary-nodeport": `
profile: minimal
revision: canary
namespace: mesh-canary
components:
  ingressGateways:
  - name: istio-ingressgateway
    service:
      type: NodePort
      ports:
      - name: http2
        port: 80
        targetPort: 8080
        nodePort: 31080
meshConfig:
  accessLogFile: /dev/stdout
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
  trustDomain: example.org
`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			res := renderSpec(t, in)
			var out strings.Builder
			var crds []string
			for _, o := range res.Objects {
				if o.GetKind() == "CustomResourceDefinition" {
					crds = append(crds, o.GetName())
					continue
				}
				data, err := yaml.Marshal(o.Object)
				if err != nil {
					t.Fatal(err)
				}
				out.WriteString("---\n")
				out.Write(data)
			}
			if len(crds) > 0 {
				data, _ := yaml.Marshal(map[string]any{"customResourceDefinitions": crds})
				out.WriteString("---\n")
				out.Write(data)
			}
			golden.AssertYAML(t, filepath.Join("testdata", name+".yaml"), []byte(out.String()))
		})
	}
}

// Each profile installs exactly its components.
func TestProfilesEnableTheirComponents(t *testing.T) {
	cases := map[string][]string{
		"demo": {ComponentBase, ComponentControlPlane, ComponentInjector, "ingress.istio-ingressgateway", "egress.istio-egressgateway",
			ComponentPrometheus, ComponentGrafana, ComponentJaeger, ComponentKiali},
		"default": {ComponentBase, ComponentControlPlane, ComponentInjector, "ingress.istio-ingressgateway"},
		"minimal": {ComponentBase, ComponentControlPlane, ComponentInjector},
		"empty":   nil,
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			res := renderSpec(t, "profile: "+name)
			var enabled []string
			for _, c := range res.Components {
				if c.Enabled {
					enabled = append(enabled, c.Name)
				}
			}
			if strings.Join(enabled, ",") != strings.Join(want, ",") {
				t.Errorf("enabled components = %v, want %v", enabled, want)
			}
			rendered := map[string]bool{}
			for _, o := range res.Objects {
				rendered[o.GetLabels()[LabelComponent]] = true
				if o.GetLabels()[LabelManagedBy] != ManagedBy {
					t.Errorf("%s has no managed-by label", ObjectKey(o))
				}
				if owner, has := o.GetLabels()[LabelOwner]; has == Shared(o) || (has && owner != "mesh") {
					t.Errorf("%s: owner label %q (shared: %v)", ObjectKey(o), owner, Shared(o))
				}
			}
			for _, c := range want {
				if !rendered[c] {
					t.Errorf("component %s rendered no object", c)
				}
			}
			if name == "empty" && len(res.Objects) != 0 {
				t.Errorf("the empty profile rendered %d objects", len(res.Objects))
			}
		})
	}
}

func TestIstioCRDsServeTheVersionsUsersApply(t *testing.T) {
	res := renderSpec(t, "profile: minimal")
	served := map[string][]string{}
	for _, o := range res.Objects {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := fromUnstructured(o, crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			if v.Served {
				served[crd.Spec.Names.Kind] = append(served[crd.Spec.Names.Kind], v.Name)
			}
		}
	}
	want := map[string]string{
		"VirtualService": "v1,v1alpha3,v1beta1", "DestinationRule": "v1,v1alpha3,v1beta1", "Gateway": "v1,v1alpha3,v1beta1",
		"ServiceEntry": "v1,v1alpha3,v1beta1", "Sidecar": "v1,v1alpha3,v1beta1",
		"PeerAuthentication": "v1,v1beta1", "AuthorizationPolicy": "v1,v1beta1", "RequestAuthentication": "v1,v1beta1",
		"Telemetry": "v1,v1alpha1",
	}
	for kind, versions := range want {
		got := served[kind]
		sort.Strings(got)
		if strings.Join(got, ",") != versions {
			t.Errorf("%s serves %v, want %s", kind, got, versions)
		}
	}
}

func TestGatewayPodsCarryIstioLabels(t *testing.T) {
	res := renderSpec(t, "profile: demo")
	want := map[string]string{"istio-ingressgateway": "ingressgateway", "istio-egressgateway": "egressgateway"}
	for _, o := range res.Objects {
		if o.GetKind() != "Deployment" || want[o.GetName()] == "" {
			continue
		}
		labels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		if labels["istio"] != want[o.GetName()] {
			t.Errorf("%s pods: istio=%q, want %q", o.GetName(), labels["istio"], want[o.GetName()])
		}
		delete(want, o.GetName())
	}
	if len(want) > 0 {
		t.Errorf("gateways not rendered: %v", want)
	}
}

func TestSpecReachesTheObjects(t *testing.T) {
	res := renderSpec(t, `
profile: demo
components:
  controlPlane:
    replicas: 3
  ingressGateways:
  - name: istio-ingressgateway
    service:
      type: NodePort
meshConfig:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`)
	find := func(kind, name string) *unstructured.Unstructured {
		for _, o := range res.Objects {
			if o.GetKind() == kind && o.GetName() == name {
				return o
			}
		}
		t.Fatalf("%s %s not rendered", kind, name)
		return nil
	}
	if r, _, _ := unstructured.NestedInt64(find("Deployment", "istiod").Object, "spec", "replicas"); r != 3 {
		t.Errorf("istiod replicas = %d, want 3", r)
	}
	if typ, _, _ := unstructured.NestedString(find("Service", "istio-ingressgateway").Object, "spec", "type"); typ != "NodePort" {
		t.Errorf("ingress service type = %q, want NodePort", typ)
	}
	mesh, _, _ := unstructured.NestedString(find("ConfigMap", "istio").Object, "data", "mesh")
	if !strings.Contains(mesh, "mode: REGISTRY_ONLY") || !strings.Contains(mesh, "accessLogFile: /dev/stdout") {
		t.Errorf("mesh config lacks the spec's settings:\n%s", mesh)
	}
}

func TestBadValuesAreRenderErrorsNamingTheProblem(t *testing.T) {
	cases := map[string]string{
		"unknown chart": `{"values": {"pilot": {"replicas": 2}}}`,
		"schema":        `{"profile": "minimal", "values": {"controlplane": {"replicas": "three"}}}`,
		"not an object": `{"values": {"global": 3}}`,
	}
	wants := map[string]string{
		"unknown chart": "spec.values.pilot: unknown chart",
		"schema":        "replicas",
		"not an object": "spec.values.global must be an object",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			user := &v1alpha1.MeshInstallSpec{}
			if err := yaml.Unmarshal([]byte(in), user); err != nil {
				t.Fatal(err)
			}
			spec, err := profile.Apply(user)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Render("mesh", spec, testOptions)
			var rerr *Error
			if !errors.As(err, &rerr) || !strings.Contains(err.Error(), wants[name]) {
				t.Fatalf("err = %v, want a render error containing %q", err, wants[name])
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	a := renderSpec(t, "profile: demo")
	b := renderSpec(t, "profile: demo")
	if a.Digest != b.Digest {
		t.Fatal("two renders of one spec differ")
	}
	c := renderSpec(t, "profile: demo\ncomponents:\n  controlPlane:\n    replicas: 2\n")
	if a.Digest == c.Digest {
		t.Fatal("a spec change did not change the digest")
	}
}
