package telemetry

import (
	"strings"
	"testing"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filelog "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/proto"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

var reviews = map[string]string{"app": "reviews", "version": "v1"}

// TestPrecedence checks which Telemetry wins for each field: the workload
// selector in the proxy's namespace over the namespace-wide one over the
// root namespace's, oldest first at each level, fields not set inherited.
func TestPrecedence(t *testing.T) {
	type obj struct {
		ns, name string
		age      int
		spec     string
	}
	tests := []struct {
		name     string
		objs     []obj
		sampling float64 // 0: no tracing
		provider string
		stats    bool
	}{
		{name: "nothing: no tracing, stats on", stats: true},
		{name: "root namespace", objs: []obj{{rootNS, "mesh", 0, `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]`}},
			sampling: 10, provider: "otel", stats: true},
		{name: "namespace overrides root", objs: []obj{
			{rootNS, "mesh", 0, `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]`},
			{"bookinfo", "ns", 1, `tracing: [{randomSamplingPercentage: 50}]`}},
			sampling: 50, provider: "otel", stats: true},
		{name: "workload overrides namespace", objs: []obj{
			{rootNS, "mesh", 0, `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]`},
			{"bookinfo", "ns", 1, `tracing: [{randomSamplingPercentage: 50}]`},
			{"bookinfo", "wl", 2, `{selector: {matchLabels: {app: reviews}}, tracing: [{providers: [{name: zipkin}]}]}`}},
			sampling: 50, provider: "zipkin", stats: true},
		{name: "selector for another workload ignored", objs: []obj{
			{rootNS, "mesh", 0, `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]`},
			{"bookinfo", "wl", 2, `{selector: {matchLabels: {app: ratings}}, tracing: [{randomSamplingPercentage: 99}]}`}},
			sampling: 10, provider: "otel", stats: true},
		{name: "other namespace ignored", objs: []obj{
			{"other", "ns", 0, `tracing: [{providers: [{name: otel}]}]`}}, stats: true},
		{name: "root namespace selector is not mesh-wide", objs: []obj{
			{rootNS, "wl", 0, `{selector: {matchLabels: {app: reviews}}, tracing: [{providers: [{name: otel}]}]}`}}, stats: true},
		{name: "oldest namespace-wide wins", objs: []obj{
			{"bookinfo", "newer", 5, `tracing: [{providers: [{name: zipkin}]}]`},
			{"bookinfo", "older", 1, `tracing: [{providers: [{name: otel}]}]`}},
			sampling: 1, provider: "otel", stats: true},
		{name: "oldest workload wins", objs: []obj{
			{"bookinfo", "newer", 5, `{selector: {matchLabels: {app: reviews}}, metrics: [{overrides: [{disabled: false}]}]}`},
			{"bookinfo", "older", 1, `{selector: {matchLabels: {version: v1}}, metrics: [{overrides: [{disabled: true}]}]}`}},
			stats: false},
		{name: "metrics disabled in root, enabled for workload", objs: []obj{
			{rootNS, "mesh", 0, `metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]`},
			{"bookinfo", "wl", 1, `{selector: {matchLabels: {app: reviews}}, metrics: [{overrides: [{disabled: false}]}]}`}},
			stats: true},
		{name: "metrics disabled in namespace", objs: []obj{
			{"bookinfo", "ns", 0, `metrics: [{providers: [{name: prometheus}], overrides: [{disabled: true}]}]`}},
			stats: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []model.Config[*telemetryv1alpha1.Telemetry]
			for _, o := range tt.objs {
				objs = append(objs, tel(t, o.ns, o.name, o.age, o.spec))
			}
			s := ForProxy(newPush(t, testMesh, objs...), sidecar("bookinfo", reviews))
			validateSettings(t, s)
			if tt.sampling == 0 {
				if s.Tracing != nil {
					t.Errorf("tracing %v, want none", s.Tracing)
				}
			} else if s.Tracing == nil || s.Tracing.GetRandomSampling().GetValue() != tt.sampling {
				t.Errorf("tracing %v, want sampling %v", s.Tracing, tt.sampling)
			}
			if s.TracingProvider != tt.provider {
				t.Errorf("provider %q, want %q", s.TracingProvider, tt.provider)
			}
			if s.Stats != tt.stats {
				t.Errorf("stats %v, want %v", s.Stats, tt.stats)
			}
			if len(s.Skipped) != 0 {
				t.Errorf("skipped: %v", s.Skipped)
			}
		})
	}
}

func TestTracing(t *testing.T) {
	tests := []struct {
		name     string
		mesh     string
		spec     string // root namespace Telemetry, "" for none
		want     string // YAML of Settings.Tracing, "" for nil
		provider string
		skipped  string
	}{
		{name: "opentelemetry provider", spec: `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 25.5}]`, provider: "otel", want: `
randomSampling: {value: 25.5}
provider:
  name: envoy.tracers.opentelemetry
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpcService: {envoyGrpc: {clusterName: "outbound|4317||opentelemetry-collector.observability.svc.cluster.local", authority: opentelemetry-collector.observability.svc.cluster.local}}
    serviceName: reviews.bookinfo`},
		{name: "namespace/host service, short name completed", spec: `tracing: [{providers: [{name: otel-short}]}]`, provider: "otel-short", want: `
randomSampling: {value: 1}
provider:
  name: envoy.tracers.opentelemetry
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpcService: {envoyGrpc: {clusterName: "outbound|4317||collector.observability.svc.cluster.local", authority: collector.observability}}
    serviceName: reviews.bookinfo`},
		{name: "zipkin from default providers with mesh sampling", mesh: `{defaultProviders: {tracing: [zipkin]}, defaultConfig: {tracing: {sampling: 5}}}`, provider: "zipkin", want: `
randomSampling: {value: 5}
provider:
  name: envoy.tracers.zipkin
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
    collectorCluster: "outbound|9411||zipkin.istio-system.svc.cluster.local"
    collectorEndpoint: /api/v2/spans
    collectorEndpointVersion: HTTP_JSON
    collectorHostname: zipkin.istio-system
    traceId128bit: true`},
		{name: "telemetry sampling overrides mesh sampling", mesh: `{defaultProviders: {tracing: [otel]}, defaultConfig: {tracing: {sampling: 5}}}`,
			spec: `tracing: [{randomSamplingPercentage: 0}]`, provider: "otel", want: `
randomSampling: {}
provider:
  name: envoy.tracers.opentelemetry
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpcService: {envoyGrpc: {clusterName: "outbound|4317||opentelemetry-collector.observability.svc.cluster.local", authority: opentelemetry-collector.observability.svc.cluster.local}}
    serviceName: reviews.bookinfo`},
		{name: "disableSpanReporting turns tracing off", spec: `tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10, disableSpanReporting: true}]`},
		{name: "disableSpanReporting false at a lower level turns it back on", spec: `tracing: [{providers: [{name: otel}], disableSpanReporting: false}]`, mesh: `{defaultConfig: {tracing: {sampling: 2}}}`, provider: "otel", want: `
randomSampling: {value: 2}
provider:
  name: envoy.tracers.opentelemetry
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpcService: {envoyGrpc: {clusterName: "outbound|4317||opentelemetry-collector.observability.svc.cluster.local", authority: opentelemetry-collector.observability.svc.cluster.local}}
    serviceName: reviews.bookinfo`},
		{name: "custom tags", spec: `
tracing:
- providers: [{name: otel}]
  customTags:
    cluster: {literal: {value: east}}
    pod: {environment: {name: POD_NAME, defaultValue: unknown}}
    user: {header: {name: X-User, defaultValue: anonymous}}
    fmt: {formatter: {value: "%REQ(x)%"}}`, provider: "otel", skipped: `custom tag "fmt"`, want: `
randomSampling: {value: 1}
customTags:
- {tag: cluster, literal: {value: east}}
- {tag: pod, environment: {name: POD_NAME, defaultValue: unknown}}
- {tag: user, requestHeader: {name: x-user, defaultValue: anonymous}}
provider:
  name: envoy.tracers.opentelemetry
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpcService: {envoyGrpc: {clusterName: "outbound|4317||opentelemetry-collector.observability.svc.cluster.local", authority: opentelemetry-collector.observability.svc.cluster.local}}
    serviceName: reviews.bookinfo`},
		{name: "unknown provider", spec: `tracing: [{providers: [{name: nope}]}]`, skipped: `"nope" is not in meshConfig.extensionProviders`},
		{name: "unsupported provider kind", spec: `tracing: [{providers: [{name: datadog}]}]`, skipped: "not OpenTelemetry or Zipkin"},
		{name: "enableTracing alone does not trace", mesh: `{enableTracing: true}`},
		{name: "sampling out of range", spec: `tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 150}]`, provider: "zipkin", skipped: "outside 0-100", want: `
randomSampling: {value: 1}
provider:
  name: envoy.tracers.zipkin
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
    collectorCluster: "outbound|9411||zipkin.istio-system.svc.cluster.local"
    collectorEndpoint: /api/v2/spans
    collectorEndpointVersion: HTTP_JSON
    collectorHostname: zipkin.istio-system
    traceId128bit: true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []model.Config[*telemetryv1alpha1.Telemetry]
			if tt.spec != "" {
				objs = append(objs, tel(t, rootNS, "mesh-default", 0, tt.spec))
			}
			push := newPush(t, testMesh, objs...)
			if tt.mesh != "" {
				extra := mesh(t, tt.mesh)
				extra.ExtensionProviders = push.Mesh.ExtensionProviders
				push.Mesh = extra
			}
			s := ForProxy(push, sidecar("bookinfo", reviews))
			validateSettings(t, s)
			if tt.want == "" {
				if s.Tracing != nil {
					t.Errorf("tracing = %v, want none", s.Tracing)
				}
			} else if s.Tracing == nil {
				t.Fatal("no tracing")
			} else {
				assertJSON(t, s.Tracing, tt.want)
				if p := s.Tracing.GetProvider(); p != nil {
					if err := p.Validate(); err != nil {
						t.Error(err)
					}
					var cfg interface {
						proto.Message
						Validate() error
					}
					switch p.GetName() {
					case OpenTelemetryTracer:
						cfg = &tracev3.OpenTelemetryConfig{}
					case ZipkinTracer:
						cfg = &tracev3.ZipkinConfig{}
					}
					if err := p.GetTypedConfig().UnmarshalTo(cfg); err != nil {
						t.Fatal(err)
					}
					if err := cfg.Validate(); err != nil {
						t.Errorf("tracer config does not validate: %v", err)
					}
				}
			}
			if s.TracingProvider != tt.provider {
				t.Errorf("TracingProvider %q, want %q", s.TracingProvider, tt.provider)
			}
			checkSkipped(t, s, tt.skipped)
		})
	}
}

func checkSkipped(t *testing.T, s Settings, want string) {
	t.Helper()
	if want == "" {
		if len(s.Skipped) != 0 {
			t.Errorf("skipped: %+v", s.Skipped)
		}
		return
	}
	if len(s.Skipped) != 1 || !strings.Contains(s.Skipped[0].Reason, want) {
		t.Errorf("skipped = %+v, want one with %q", s.Skipped, want)
	}
}

func TestAccessLogs(t *testing.T) {
	tests := []struct {
		name    string
		mesh    string
		spec    string
		want    []string // path + " " + format of each file log
		skipped string
	}{
		{name: "none by default"},
		{name: "built-in envoy provider", spec: `accessLogging: [{providers: [{name: envoy}]}]`, want: []string{"/dev/stdout " + DefaultAccessLogFormat}},
		{name: "file provider with text format", spec: `accessLogging: [{providers: [{name: text-log}]}]`, want: []string{"/var/log/access.log %REQ(:METHOD)% %RESPONSE_CODE%\n"}},
		{name: "two providers", spec: `accessLogging: [{providers: [{name: text-log}, {name: envoy}]}]`,
			want: []string{"/var/log/access.log %REQ(:METHOD)% %RESPONSE_CODE%\n", "/dev/stdout " + DefaultAccessLogFormat}},
		{name: "default providers", mesh: `{defaultProviders: {accessLogging: [envoy]}}`, want: []string{"/dev/stdout " + DefaultAccessLogFormat}},
		{name: "disabled overrides default providers", mesh: `{defaultProviders: {accessLogging: [envoy]}}`, spec: `accessLogging: [{disabled: true}]`},
		{name: "legacy accessLogFile", mesh: `{accessLogFile: /dev/stdout, accessLogFormat: "%START_TIME% %RESPONSE_CODE%"}`, want: []string{"/dev/stdout %START_TIME% %RESPONSE_CODE%\n"}},
		{name: "json labels use the default text", spec: `accessLogging: [{providers: [{name: json-log}]}]`, want: []string{"/dev/stdout " + DefaultAccessLogFormat}, skipped: "JSON labels"},
		{name: "filter is reported", spec: `accessLogging: [{providers: [{name: envoy}], filter: {expression: "response.code >= 400"}}]`,
			want: []string{"/dev/stdout " + DefaultAccessLogFormat}, skipped: "filter expressions"},
		{name: "unsupported provider", spec: `accessLogging: [{providers: [{name: otel}]}]`, skipped: "not envoyFileAccessLog"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []model.Config[*telemetryv1alpha1.Telemetry]
			if tt.spec != "" {
				objs = append(objs, tel(t, rootNS, "mesh-default", 0, tt.spec))
			}
			push := newPush(t, testMesh, objs...)
			if tt.mesh != "" {
				extra := mesh(t, tt.mesh)
				extra.ExtensionProviders = push.Mesh.ExtensionProviders
				push.Mesh = extra
			}
			s := ForProxy(push, sidecar("bookinfo", reviews))
			validateSettings(t, s)
			var got []string
			for _, a := range s.AccessLogs {
				if a.GetName() != FileAccessLog {
					t.Errorf("access log %s", a.GetName())
				}
				f := &filelog.FileAccessLog{}
				if err := a.GetTypedConfig().UnmarshalTo(f); err != nil {
					t.Fatal(err)
				}
				if err := f.Validate(); err != nil {
					t.Fatal(err)
				}
				got = append(got, f.GetPath()+" "+f.GetLogFormat().GetTextFormatSource().GetInlineString())
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("access logs %q, want %q", got, tt.want)
			}
			checkSkipped(t, s, tt.skipped)
		})
	}
}

func TestMetrics(t *testing.T) {
	tests := []struct {
		name    string
		mesh    string
		spec    string
		stats   bool
		skipped string
	}{
		{name: "on by default", stats: true},
		{name: "named prometheus provider", spec: `metrics: [{providers: [{name: prom}]}]`, stats: true},
		{name: "default providers not prometheus", mesh: `{defaultProviders: {metrics: [sd]}}`, stats: false, skipped: "not Prometheus"},
		{name: "all metrics disabled", spec: `metrics: [{overrides: [{match: {metric: ALL_METRICS, mode: CLIENT_AND_SERVER}, disabled: true}]}]`, stats: false},
		{name: "one metric disabled is reported", spec: `metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]`, stats: true, skipped: "single metrics or tags"},
		{name: "tag overrides are reported", spec: `metrics: [{overrides: [{tagOverrides: {request_host: {value: "request.host"}}}]}]`, stats: true, skipped: "single metrics or tags"},
		{name: "unknown provider", spec: `metrics: [{providers: [{name: nope}]}]`, stats: false, skipped: "not in meshConfig.extensionProviders"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []model.Config[*telemetryv1alpha1.Telemetry]
			if tt.spec != "" {
				objs = append(objs, tel(t, rootNS, "mesh-default", 0, tt.spec))
			}
			push := newPush(t, testMesh, objs...)
			if tt.mesh != "" {
				extra := mesh(t, tt.mesh)
				extra.ExtensionProviders = push.Mesh.ExtensionProviders
				push.Mesh = extra
			}
			s := ForProxy(push, sidecar("bookinfo", reviews))
			if s.Stats != tt.stats {
				t.Errorf("stats %v, want %v", s.Stats, tt.stats)
			}
			checkSkipped(t, s, tt.skipped)
		})
	}
}

// TestModes checks match modes: ForMode keeps the entries of its
// direction, ForProxy applies all of them.
func TestModes(t *testing.T) {
	push := newPush(t, testMesh, tel(t, rootNS, "mesh", 0, `
tracing:
- {providers: [{name: otel}], randomSamplingPercentage: 10}
- {match: {mode: SERVER}, randomSamplingPercentage: 50}
accessLogging:
- {match: {mode: CLIENT}, providers: [{name: envoy}]}
metrics:
- overrides: [{match: {mode: SERVER}, disabled: true}]`))
	proxy := sidecar("bookinfo", reviews)
	for _, tt := range []struct {
		name     string
		s        Settings
		sampling float64
		logs     int
		stats    bool
	}{
		{"client", ForMode(push, proxy, telemetryv1alpha1.WorkloadMode_CLIENT), 10, 1, true},
		{"server", ForMode(push, proxy, telemetryv1alpha1.WorkloadMode_SERVER), 50, 0, false},
		{"both", ForMode(push, proxy, telemetryv1alpha1.WorkloadMode_CLIENT_AND_SERVER), 50, 1, false},
		{"ForProxy", ForProxy(push, proxy), 50, 1, false},
	} {
		validateSettings(t, tt.s)
		if got := tt.s.Tracing.GetRandomSampling().GetValue(); got != tt.sampling || len(tt.s.AccessLogs) != tt.logs || tt.s.Stats != tt.stats {
			t.Errorf("%s: sampling %v logs %d stats %v, want %v %d %v", tt.name, got, len(tt.s.AccessLogs), tt.s.Stats, tt.sampling, tt.logs, tt.stats)
		}
	}
}

func TestTargetRefSkipped(t *testing.T) {
	push := newPush(t, testMesh, tel(t, "bookinfo", "gw", 0, `{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}, metrics: [{overrides: [{disabled: true}]}]}`))
	s := ForProxy(push, sidecar("bookinfo", reviews))
	if !s.Stats {
		t.Error("targetRef Telemetry applied to a sidecar")
	}
	checkSkipped(t, s, "targetRef")
}
