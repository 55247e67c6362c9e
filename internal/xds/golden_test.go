package xds

import (
	"bytes"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/golden"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// renderYAML writes every resource as one YAML document, in Resources
// order, so golden files diff by resource.
func renderYAML(t testing.TB, r *Resources) []byte {
	t.Helper()
	var out bytes.Buffer
	doc := func(kind string, m proto.Message) {
		j, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n# " + kind + "\n")
		out.Write(y)
	}
	for _, x := range r.Listeners {
		doc("Listener", x)
	}
	for _, x := range r.Routes {
		doc("RouteConfiguration", x)
	}
	for _, x := range r.Clusters {
		doc("Cluster", x)
	}
	for _, x := range r.Endpoints {
		doc("ClusterLoadAssignment", x)
	}
	for _, x := range r.Secrets {
		doc("Secret", x)
	}
	if len(r.Skipped) > 0 {
		y, err := yaml.Marshal(map[string]any{"skipped": r.Skipped})
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out.Bytes()
}

// TestGolden translates the bookinfo fixture set for a sidecar (REDIRECT
// and NONE interception, REGISTRY_ONLY with a Sidecar scoping egress) and
// the ingress gateway, and compares with testdata (go test -update).
func TestGolden(t *testing.T) {
	cases := map[string]func() (*model.PushContext, *model.Proxy){
		"sidecar": func() (*model.PushContext, *model.Proxy) { return bookinfo(), productpageProxy() },
		"sidecar-none": func() (*model.PushContext, *model.Proxy) {
			p := productpageProxy()
			p.InterceptionMode = model.InterceptionNone
			p.InboundBindAddress = "127.0.0.2"
			p.OutboundBindAddress = "127.0.0.3"
			p.AppAddress = "127.0.0.4"
			return bookinfo(), p
		},
		"sidecar-scoped-registry-only": func() (*model.PushContext, *model.Proxy) {
			push := bookinfo()
			push.Mesh = &meshconfig.MeshConfig{OutboundTrafficPolicy: &meshconfig.MeshConfig_OutboundTrafficPolicy{Mode: meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY}}
			push.Sidecars = []model.Config[*networking.Sidecar]{cfg(model.KindSidecar, "default", "default", 1, &networking.Sidecar{
				Egress: []*networking.IstioEgressListener{{Hosts: []string{"./reviews.default.svc.cluster.local", "istio-system/*"}}},
			})}
			return push, productpageProxy()
		},
		"ingressgateway": func() (*model.PushContext, *model.Proxy) { return bookinfo(), ingressProxy() },
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			push, proxy := build()
			r := Generate(push, proxy)
			validateAll(t, r)
			golden.AssertYAML(t, filepath.Join("testdata", name+".yaml"), renderYAML(t, r))
		})
	}
}
