package profile

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/golden"
)

func TestNamesAreTheFourProfiles(t *testing.T) {
	if got, want := strings.Join(Names(), ","), "default,demo,empty,minimal"; got != want {
		t.Fatalf("profiles = %s, want %s", got, want)
	}
}

func TestUnknownProfileNamesTheKnownOnes(t *testing.T) {
	_, err := Apply(&v1alpha1.MeshInstallSpec{Profile: "tiny"})
	if err == nil || !strings.Contains(err.Error(), `unknown profile "tiny"`) || !strings.Contains(err.Error(), "demo") {
		t.Fatalf("err = %v, want an unknown-profile error listing the profiles", err)
	}
}

// Golden files of the effective spec: every profile as it is, and user specs
// layered over profiles.
func TestApplyGolden(t *testing.T) {
	cases := map[string]string{
		"demo":    `profile: demo`,
		"default": `{}`,
		"minimal": `profile: minimal`,
		"empty":   `profile: empty`,
		"demo-overrides": `
profile: demo
components:
  ingressGateways:
  - name: istio-ingressgateway
    replicas: 3
    service:
      type: NodePort
  - name: internal-gateway
    labels:
      istio: internal
  addons:
    kiali:
      enabled: false
meshConfig:
  defaultConfig:
    holdApplicationUntilProxyStarts: true
values:
  controlplane:
    env:
      PILOT_TRACE_SAMPLING: "50"
`,
		"empty-with-control-plane": `
profile: empty
components:
  base:
    enabled: true
  controlPlane:
    enabled: true
    replicas: 2
`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			user := &v1alpha1.MeshInstallSpec{}
			if err := yaml.UnmarshalStrict([]byte(in), user); err != nil {
				t.Fatal(err)
			}
			got, err := Apply(user)
			if err != nil {
				t.Fatal(err)
			}
			out, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			golden.AssertYAML(t, filepath.Join("testdata", name+".yaml"), out)
		})
	}
}

func TestUserWinsOverProfile(t *testing.T) {
	user := &v1alpha1.MeshInstallSpec{
		Profile: v1alpha1.ProfileDemo,
		Components: &v1alpha1.Components{
			ControlPlane: &v1alpha1.ControlPlaneComponent{WorkloadComponent: v1alpha1.WorkloadComponent{
				WorkloadSettings: v1alpha1.WorkloadSettings{Replicas: ptr.To[int32](4)},
			}},
			EgressGateways: []v1alpha1.GatewayComponent{{Name: "istio-egressgateway", Enabled: ptr.To(false)}},
		},
	}
	got, err := Apply(user)
	if err != nil {
		t.Fatal(err)
	}
	cp := got.Components.ControlPlane
	if *cp.Replicas != 4 || !*cp.Enabled || cp.Resources.Requests.Cpu().String() != "10m" {
		t.Errorf("control plane = %s, want replicas 4 from the user, enabled and 10m cpu from the demo profile", mustJSON(cp))
	}
	if len(got.Components.EgressGateways) != 1 || *got.Components.EgressGateways[0].Enabled {
		t.Errorf("egress gateways = %s, want the profile's one, disabled by the user", mustJSON(got.Components.EgressGateways))
	}
	if *got.Components.EgressGateways[0].Replicas != 1 {
		t.Errorf("the profile's replicas of the egress gateway were lost: %s", mustJSON(got.Components.EgressGateways))
	}
	if user.Components.ControlPlane.Resources != nil {
		t.Error("Apply modified its input")
	}
}

func TestMergeMapsReplacesListsAndKeepsInputs(t *testing.T) {
	base := map[string]any{"a": map[string]any{"b": 1, "c": []any{1, 2}}, "d": "x"}
	over := map[string]any{"a": map[string]any{"c": []any{3}}, "e": true}
	got := MergeMaps(base, over)
	want := `{"a":{"b":1,"c":[3]},"d":"x","e":true}`
	if mustJSON(got) != want {
		t.Errorf("MergeMaps = %s, want %s", mustJSON(got), want)
	}
	if mustJSON(base) != `{"a":{"b":1,"c":[1,2]},"d":"x"}` {
		t.Errorf("MergeMaps modified base: %s", mustJSON(base))
	}
}

func mustJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}
