package telemetry

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

const rootNS = "istio-system"

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// tel builds a Telemetry from its spec in YAML; age orders objects.
func tel(t testing.TB, ns, name string, age int, specYAML string) model.Config[*telemetryv1alpha1.Telemetry] {
	t.Helper()
	spec := &telemetryv1alpha1.Telemetry{}
	j, err := yaml.YAMLToJSON([]byte(specYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.UnmarshalJSON(j); err != nil {
		t.Fatalf("bad telemetry: %v", err)
	}
	return model.Config[*telemetryv1alpha1.Telemetry]{
		Meta: model.Meta{Kind: model.KindTelemetry, Namespace: ns, Name: name, CreationTimestamp: epoch.Add(time.Duration(age) * time.Minute)},
		Spec: spec,
	}
}

// mesh parses a MeshConfig from YAML.
func mesh(t testing.TB, y string) *meshconfig.MeshConfig {
	t.Helper()
	m := &meshconfig.MeshConfig{}
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(j, m); err != nil {
		t.Fatalf("bad mesh config: %v", err)
	}
	return m
}

// testMesh has an OpenTelemetry and a Zipkin tracer, a file logger, a
// Prometheus and a Stackdriver metrics provider.
const testMesh = `
extensionProviders:
- name: otel
  opentelemetry: {service: opentelemetry-collector.observability.svc.cluster.local, port: 4317}
- name: zipkin
  zipkin: {service: zipkin.istio-system, port: 9411}
- name: otel-short
  opentelemetry: {service: observability/collector.observability, port: 4317}
- name: json-log
  envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {a: b}}}
- name: text-log
  envoyFileAccessLog: {path: /var/log/access.log, logFormat: {text: "%REQ(:METHOD)% %RESPONSE_CODE%"}}
- name: prom
  prometheus: {}
- name: sd
  stackdriver: {}
- name: datadog
  datadog: {service: dd.agent, port: 8126}
`

func newPush(t testing.TB, meshYAML string, telemetries ...model.Config[*telemetryv1alpha1.Telemetry]) *model.PushContext {
	return &model.PushContext{
		Mesh: mesh(t, meshYAML), DomainSuffix: "cluster.local", TrustDomain: "cluster.local", RootNamespace: rootNS,
		Services: []*model.Service{
			{Hostname: "collector.observability.svc.cluster.local", Name: "collector", Namespace: "observability"},
			{Hostname: "zipkin.istio-system.svc.cluster.local", Name: "zipkin", Namespace: rootNS},
		},
		Telemetries: telemetries,
	}
}

func sidecar(ns string, labels map[string]string) *model.Proxy {
	return &model.Proxy{ID: "sidecar~10.0.0.5~pod." + ns + "~" + ns + ".svc.cluster.local", Type: model.SidecarProxy,
		PodName: "reviews-v1-abc", WorkloadName: "reviews-v1", Namespace: ns, Labels: labels}
}

type validator interface{ Validate() error }

// validateSettings checks that every proto of the settings validates.
func validateSettings(t testing.TB, s Settings) {
	t.Helper()
	var msgs []validator
	if s.Tracing != nil {
		msgs = append(msgs, s.Tracing)
	}
	for _, a := range s.AccessLogs {
		msgs = append(msgs, a)
	}
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			t.Fatalf("%T does not validate: %v", m, err)
		}
	}
}

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

func assertJSON(t testing.TB, m proto.Message, wantYAML string) {
	t.Helper()
	var want any
	if err := yaml.Unmarshal([]byte(wantYAML), &want); err != nil {
		t.Fatalf("bad expectation: %v", err)
	}
	got := toJSON(t, m)
	wb, _ := json.Marshal(want)
	var wantN any
	_ = json.Unmarshal(wb, &wantN)
	if !reflect.DeepEqual(got, wantN) {
		gb, _ := yaml.Marshal(got)
		t.Errorf("got:\n%s\nwant:\n%s", gb, wantYAML)
	}
}
