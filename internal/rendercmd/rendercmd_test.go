package rendercmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderProfilePrintsEveryObject(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := Run([]string{"--profile", "demo"}, &out, &errOut); err != nil {
		t.Fatalf("render --profile demo: %v\n%s", err, errOut.String())
	}
	docs := strings.Count(out.String(), "---\n")
	if docs < 40 {
		t.Errorf("demo rendered %d documents, want all of its objects", docs)
	}
	for _, want := range []string{"name: istiod\n", "name: istio-ingressgateway\n", "name: kiali\n", "kind: CustomResourceDefinition", "image: ghcr.io/mizzen-mesh/mizzen:0.1.0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestRenderFileHonoursTheSpec(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mi.yaml")
	manifest := `apiVersion: install.mizzen.dev/v1alpha1
kind: MeshInstall
metadata:
  name: canary
spec:
  profile: minimal
  revision: canary
  namespace: mesh
`
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Run([]string{"-f", file, "--hub", "registry.example/mesh", "--tag", "0.2.0"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"name: istiod-canary\n", "namespace: mesh\n", "image: registry.example/mesh/mizzen:0.2.0", "install.mizzen.dev/name: canary"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(s, "istio-ingressgateway") {
		t.Error("minimal rendered an ingress gateway")
	}
}

func TestRenderRejectsBadInput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(file, []byte("kind: MeshInstall\nspec:\n  profil: demo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{}, {"--profile", "tiny"}, {"-f", file}, {"-f", filepath.Join(t.TempDir(), "missing.yaml")}} {
		if err := Run(args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("render %v succeeded", args)
		}
	}
}
