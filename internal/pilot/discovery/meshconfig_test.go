package discovery

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
)

func TestLoadMeshConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		check   func(*testing.T, *meshconfig.MeshConfig)
		wantErr string
	}{{
		name: "empty file is the defaults",
		yaml: "",
		check: func(t *testing.T, m *meshconfig.MeshConfig) {
			if m.GetTrustDomain() != "cluster.local" || !m.GetEnableTracing() || m.GetAccessLogFile() != "" ||
				m.GetOutboundTrafficPolicy().GetMode() != meshconfig.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY ||
				m.GetDefaultConfig().GetDiscoveryAddress() != "istiod.istio-system.svc:15012" || m.GetRootNamespace() != "" {
				t.Errorf("not Istio's defaults: %v", m)
			}
		},
	}, {
		name: "fields merge over the defaults, explicit false wins",
		yaml: `
rootNamespace: mesh-root
enableTracing: false
accessLogFile: /dev/stdout
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
default_config:
  discoveryAddress: istiod-canary.mizzen.svc:15012
  proxyMetadata: {FOO: bar}
extensionProviders:
- name: otel
  opentelemetry: {service: jaeger-collector.mizzen.svc.cluster.local, port: 4317}
- name: envoy
  envoyFileAccessLog: {path: /dev/stderr}
`,
		check: func(t *testing.T, m *meshconfig.MeshConfig) {
			if m.GetRootNamespace() != "mesh-root" || m.GetEnableTracing() || m.GetAccessLogFile() != "/dev/stdout" ||
				m.GetOutboundTrafficPolicy().GetMode() != meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY {
				t.Errorf("top-level fields not applied: %v", m)
			}
			dc := m.GetDefaultConfig()
			if dc.GetDiscoveryAddress() != "istiod-canary.mizzen.svc:15012" || dc.GetProxyMetadata()["FOO"] != "bar" ||
				dc.GetDrainDuration().AsDuration() != 45*time.Second || dc.GetStatusPort() != 15020 {
				t.Errorf("defaultConfig not merged field by field: %v", dc)
			}
			var names []string
			for _, p := range m.GetExtensionProviders() {
				names = append(names, p.GetName())
			}
			if strings.Join(names, ",") != "prometheus,otel,envoy" {
				t.Errorf("extension providers %v, want prometheus,otel,envoy", names)
			}
			for _, p := range m.GetExtensionProviders() {
				if p.GetName() == "envoy" && p.GetEnvoyFileAccessLog().GetPath() != "/dev/stderr" {
					t.Errorf("the user's envoy provider does not replace the default one: %v", p)
				}
			}
		},
	}, {
		name:    "unknown top-level field",
		yaml:    "trustDomain: example.org\nenableTracin: true\n",
		wantErr: `unknown field "enableTracin"`,
	}, {
		name:    "unknown nested field",
		yaml:    "defaultConfig:\n  discoveryAdress: x:15012\n",
		wantErr: `unknown field "defaultConfig.discoveryAdress"`,
	}, {
		name:    "unknown field in a list",
		yaml:    "extensionProviders:\n- name: x\n  opentelemetry: {service: a, prot: 1}\n",
		wantErr: `unknown field "extensionProviders[0].opentelemetry.prot"`,
	}, {
		name:    "bad enum",
		yaml:    "outboundTrafficPolicy: {mode: SOMETIMES}\n",
		wantErr: `invalid value for enum field mode: "SOMETIMES"`,
	}, {
		name:    "bad discovery selector",
		yaml:    "discoverySelectors:\n- matchLabels: {mesh: enabled}\n- matchExpressions: [{key: env, operator: Near, values: [prod]}]\n",
		wantErr: `discoverySelectors[1]: "Near" is not a valid label selector operator`,
	}, {
		name:    "not an object",
		yaml:    "- a\n- b\n",
		wantErr: "the mesh config must be an object",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mesh")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := LoadMeshConfig(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, m)
		})
	}
	if _, err := LoadMeshConfig(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file loads")
	}
}

func TestWatchMeshConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh")
	if err := os.WriteFile(path, []byte("trustDomain: a.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *meshconfig.MeshConfig, 10)
	done := make(chan struct{})
	go func() {
		WatchMeshConfig(ctx, path, 10*time.Millisecond, slog.New(slog.DiscardHandler), func(m *meshconfig.MeshConfig) { got <- m })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	// An invalid file is skipped; the next valid one is applied. The
	// content the watch started with is not re-applied.
	write := func(s string) {
		// A mounted ConfigMap changes by renaming a new file in place.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("trustDomain: b.example\nbogus: 1\n")
	time.Sleep(50 * time.Millisecond) // let the watch see (and skip) it
	write("trustDomain: c.example\n")
	select {
	case m := <-got:
		if m.GetTrustDomain() != "c.example" {
			t.Fatalf("applied trust domain %q, want c.example", m.GetTrustDomain())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the change was not applied")
	}
}
