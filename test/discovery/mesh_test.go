package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
)

// The mesh config file the operator mounts loads over Istio's defaults; a
// typo is an error naming the field; SetMesh reaches the next snapshot and
// the subscribers.
func TestMeshConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  tracing:\n    sampling: 10\n    zipkn: {address: z:9411}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := discovery.LoadMeshConfig(bad); err == nil || !strings.Contains(err.Error(), `unknown field "defaultConfig.tracing.zipkn"`) {
		t.Fatalf("error %v does not name the field", err)
	}
	good := filepath.Join(dir, "mesh")
	if err := os.WriteFile(good, []byte("trustDomain: example.org\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFile: /dev/stdout\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := discovery.LoadMeshConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	before := ctrl.Snapshot()
	ctrl.SetMesh(m)
	t.Cleanup(func() { ctrl.SetMesh(discovery.DefaultMeshConfig()) })
	s := ctrl.Snapshot()
	if s.Version == before.Version || s.TrustDomain != "example.org" || s.RootNamespace != meshNamespace ||
		s.Mesh.GetOutboundTrafficPolicy().GetMode() != meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY ||
		!s.Mesh.GetEnableTracing() || s.Mesh.GetAccessLogFile() != "/dev/stdout" {
		t.Errorf("snapshot %s: trust domain %q, root %q, mesh %v", s.Version, s.TrustDomain, s.RootNamespace, s.Mesh)
	}
	eventually(t, "a MeshConfig change", func() error {
		if _, ok := rec.find(func(ch discovery.Change) bool { return ch.Kind == discovery.KindMeshConfig }); !ok {
			return os.ErrNotExist
		}
		return nil
	})
}
