// Package telemetry translates the Telemetry API and the mesh config's
// telemetry settings into what the listener builder of internal/xds puts
// on a proxy's HTTP connection managers and TCP proxies: tracing, access
// logs and whether Istio's standard metrics (the istio.stats filter) are
// reported. See docs/xds.md for the Envoy fields the proxy implements.
package telemetry

import (
	"fmt"
	"sort"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filelog "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtag "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// Envoy extension names used in the settings.
const (
	OpenTelemetryTracer = "envoy.tracers.opentelemetry"
	ZipkinTracer        = "envoy.tracers.zipkin"
	FileAccessLog       = "envoy.access_loggers.file"
)

// Built-in provider names that need no extensionProviders entry, as in
// Istio: "prometheus" (metrics) and "envoy" (file access log to stdout).
const (
	BuiltinPrometheus = "prometheus"
	BuiltinEnvoyLog   = "envoy"
)

// DefaultSamplingPercentage applies when neither a Telemetry nor
// meshConfig.defaultConfig.tracing.sampling sets one (Istio's default).
const DefaultSamplingPercentage = 1.0

// DefaultAccessLogFormat is the text format of file access logs whose
// provider sets none (Istio's default fields).
const DefaultAccessLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
	`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% ` +
	`%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ` +
	`%REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

// Settings is the telemetry of one proxy.
type Settings struct {
	// Tracing goes on every HTTP connection manager; nil means no tracing
	// (also with disableSpanReporting: the proxy has no tracer that
	// samples without reporting).
	Tracing *hcm.HttpConnectionManager_Tracing
	// AccessLogs go on HTTP connection managers and TCP proxies.
	AccessLogs []*accesslogv3.AccessLog
	// Stats says whether the istio.stats filters are added.
	Stats bool
	// TracingProvider is the extension provider name chosen for tracing
	// ("" without tracing or when span reporting is disabled).
	TracingProvider string
	// Skipped lists Telemetry objects (or the mesh config, Kind
	// "MeshConfig") whose settings could not be applied, and why.
	Skipped []xds.Skipped
}

// ForProxy returns the proxy's telemetry for both directions: Telemetry
// entries apply whatever their match mode (CLIENT, SERVER or both). Use
// ForMode to honour match modes per direction.
func ForProxy(push *model.PushContext, proxy *model.Proxy) Settings {
	return forMode(push, proxy, nil)
}

// ForMode returns the proxy's telemetry for one direction: mode CLIENT for
// outbound listeners, SERVER for inbound ones; entries whose match mode is
// the other direction are ignored. CLIENT_AND_SERVER is ForProxy.
func ForMode(push *model.PushContext, proxy *model.Proxy, mode telemetryv1alpha1.WorkloadMode) Settings {
	if mode == telemetryv1alpha1.WorkloadMode_CLIENT_AND_SERVER {
		return forMode(push, proxy, nil)
	}
	return forMode(push, proxy, &mode)
}

type telemetryCfg = model.Config[*telemetryv1alpha1.Telemetry]

// applies reports whether an entry with match mode m is used for mode.
func applies(m telemetryv1alpha1.WorkloadMode, mode *telemetryv1alpha1.WorkloadMode) bool {
	return mode == nil || m == telemetryv1alpha1.WorkloadMode_CLIENT_AND_SERVER || m == *mode
}

type builder struct {
	push    *model.PushContext
	proxy   *model.Proxy
	mesh    *meshconfig.MeshConfig
	skipped []xds.Skipped
	seen    map[xds.Skipped]bool
}

func (b *builder) skip(kind string, m model.Meta, reason string) {
	s := xds.Skipped{Kind: kind, Namespace: m.Namespace, Name: m.Name, Reason: reason}
	if !b.seen[s] {
		b.seen[s] = true
		b.skipped = append(b.skipped, s)
	}
}

func (b *builder) skipMesh(reason string) {
	b.skip("MeshConfig", model.Meta{}, reason)
}

// levels returns the Telemetry objects that apply to the proxy, least
// specific first: the oldest selector-less one in the root namespace, the
// oldest selector-less one in the proxy's namespace, the oldest one in the
// proxy's namespace whose selector matches the proxy.
func (b *builder) levels() []*telemetryCfg {
	var root, ns, workload *telemetryCfg
	for _, i := range oldestFirst(b.push.Telemetries) {
		t := &b.push.Telemetries[i]
		if t.Spec.GetTargetRef() != nil || len(t.Spec.GetTargetRefs()) > 0 {
			if t.Namespace == b.proxy.Namespace || t.Namespace == b.push.RootNamespace {
				b.skip(string(model.KindTelemetry), t.Meta, "targetRef policies apply to Gateway API gateways and waypoints, not to this proxy")
			}
			continue
		}
		sel := t.Spec.GetSelector().GetMatchLabels()
		switch {
		case len(sel) > 0:
			if workload == nil && t.Namespace == b.proxy.Namespace && matches(sel, b.proxy.Labels) {
				workload = t
			}
		case t.Namespace == b.push.RootNamespace:
			if root == nil {
				root = t
			}
		case t.Namespace == b.proxy.Namespace:
			if ns == nil {
				ns = t
			}
		}
	}
	var out []*telemetryCfg
	for _, t := range []*telemetryCfg{root, ns, workload} {
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func oldestFirst(c []telemetryCfg) []int {
	idx := make([]int, len(c))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool {
		a, b := c[idx[i]], c[idx[j]]
		if !a.CreationTimestamp.Equal(b.CreationTimestamp) {
			return a.CreationTimestamp.Before(b.CreationTimestamp)
		}
		return a.Key() < b.Key()
	})
	return idx
}

// tracingSpec is the merged tracing configuration: each more specific
// level overrides the fields it sets.
type tracingSpec struct {
	providers   []string
	providerOf  *telemetryCfg // who named the providers (for Skipped)
	sampling    *float64
	disableSpan *bool
	customTags  map[string]*telemetryv1alpha1.Tracing_CustomTag
	tagsOf      *telemetryCfg
}

type metricsSpec struct {
	providers  []string
	providerOf *telemetryCfg
	// disabled is the last ALL_METRICS override's "disabled" (nil: none).
	disabled *bool
}

type loggingSpec struct {
	providers  []string
	providerOf *telemetryCfg
	disabled   *bool
	filterOf   *telemetryCfg // an entry with a filter expression
}

func forMode(push *model.PushContext, proxy *model.Proxy, mode *telemetryv1alpha1.WorkloadMode) Settings {
	b := &builder{push: push, proxy: proxy, mesh: push.Mesh, seen: map[xds.Skipped]bool{}}
	if b.mesh == nil {
		b.mesh = &meshconfig.MeshConfig{}
	}
	var tr tracingSpec
	var me metricsSpec
	var lg loggingSpec
	for _, t := range b.levels() {
		for _, e := range t.Spec.GetTracing() {
			if !applies(e.GetMatch().GetMode(), mode) {
				continue
			}
			if names := providerNames(e.GetProviders()); len(names) > 0 {
				tr.providers, tr.providerOf = names, t
			}
			if s := e.GetRandomSamplingPercentage(); s != nil {
				v := s.GetValue()
				tr.sampling = &v
			}
			if d := e.GetDisableSpanReporting(); d != nil {
				v := d.GetValue()
				tr.disableSpan = &v
			}
			if len(e.GetCustomTags()) > 0 {
				tr.customTags, tr.tagsOf = e.GetCustomTags(), t
			}
		}
		for _, e := range t.Spec.GetMetrics() {
			if names := providerNames(e.GetProviders()); len(names) > 0 {
				me.providers, me.providerOf = names, t
			}
			for _, o := range e.GetOverrides() {
				if !applies(o.GetMatch().GetMode(), mode) {
					continue
				}
				all := o.GetMatch().GetCustomMetric() == "" && o.GetMatch().GetMetric() == telemetryv1alpha1.MetricSelector_ALL_METRICS
				if !all || len(o.GetTagOverrides()) > 0 {
					b.skip(string(model.KindTelemetry), t.Meta, "metrics overrides of single metrics or tags are not supported; only disabling ALL_METRICS is applied")
				}
				if all && o.GetDisabled() != nil {
					v := o.GetDisabled().GetValue()
					me.disabled = &v
				}
			}
		}
		for _, e := range t.Spec.GetAccessLogging() {
			if !applies(e.GetMatch().GetMode(), mode) {
				continue
			}
			if names := providerNames(e.GetProviders()); len(names) > 0 {
				lg.providers, lg.providerOf = names, t
			}
			if d := e.GetDisabled(); d != nil {
				v := d.GetValue()
				lg.disabled = &v
			}
			if e.GetFilter().GetExpression() != "" {
				lg.filterOf = t
			}
		}
	}
	s := Settings{Stats: b.stats(&me)}
	s.Tracing, s.TracingProvider = b.tracing(&tr)
	s.AccessLogs = b.accessLogs(&lg)
	s.Skipped = b.skipped
	return s
}

func providerNames(refs []*telemetryv1alpha1.ProviderRef) []string {
	var out []string
	for _, r := range refs {
		if r.GetName() != "" {
			out = append(out, r.GetName())
		}
	}
	return out
}

func (b *builder) provider(name string) *meshconfig.MeshConfig_ExtensionProvider {
	for _, p := range b.mesh.GetExtensionProviders() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// skipProvider reports a provider problem against the Telemetry that named
// it, or the mesh config when it came from defaultProviders.
func (b *builder) skipProvider(of *telemetryCfg, reason string) {
	if of != nil {
		b.skip(string(model.KindTelemetry), of.Meta, reason)
		return
	}
	b.skipMesh(reason)
}

// tracing resolves the first tracing provider (Envoy supports one tracer
// per connection manager). Without a provider from a Telemetry or
// meshConfig.defaultProviders.tracing, the proxy does not trace.
// It also returns the name of the provider that reports spans.
func (b *builder) tracing(tr *tracingSpec) (*hcm.HttpConnectionManager_Tracing, string) {
	names := tr.providers
	if len(names) == 0 {
		names = b.mesh.GetDefaultProviders().GetTracing()
	}
	if len(names) == 0 {
		return nil, ""
	}
	if len(names) > 1 {
		b.skipProvider(tr.providerOf, fmt.Sprintf("only the first tracing provider (%s) is used", names[0]))
	}
	sampling := DefaultSamplingPercentage
	if s := b.mesh.GetDefaultConfig().GetTracing().GetSampling(); s > 0 && s <= 100 {
		sampling = s
	}
	if tr.sampling != nil {
		sampling = *tr.sampling
	}
	if sampling < 0 || sampling > 100 {
		b.skipProvider(tr.providerOf, fmt.Sprintf("randomSamplingPercentage %v is outside 0-100; %v is used", sampling, DefaultSamplingPercentage))
		sampling = DefaultSamplingPercentage
	}
	out := &hcm.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: sampling},
		CustomTags:     b.customTags(tr),
	}
	if tr.disableSpan != nil && *tr.disableSpan {
		return nil, ""
	}
	p := b.provider(names[0])
	if p == nil {
		b.skipProvider(tr.providerOf, fmt.Sprintf("tracing provider %q is not in meshConfig.extensionProviders", names[0]))
		return nil, ""
	}
	switch {
	case p.GetOpentelemetry() != nil:
		o := p.GetOpentelemetry()
		if o.GetHttp() != nil {
			b.skipProvider(tr.providerOf, fmt.Sprintf("tracing provider %q: the OTLP/HTTP exporter is not supported; OTLP/gRPC is used", p.GetName()))
		}
		cluster, ok := b.cluster(o.GetService(), o.GetPort())
		if !ok {
			b.skipProvider(tr.providerOf, fmt.Sprintf("tracing provider %q needs service and port", p.GetName()))
			return nil, ""
		}
		out.Provider = &tracev3.Tracing_Http{Name: OpenTelemetryTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{
			GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{
				ClusterName: cluster, Authority: serviceHost(o.GetService()),
			}}},
			ServiceName: b.serviceName(),
		})}}
	case p.GetZipkin() != nil:
		z := p.GetZipkin()
		cluster, ok := b.cluster(z.GetService(), z.GetPort())
		if !ok {
			b.skipProvider(tr.providerOf, fmt.Sprintf("tracing provider %q needs service and port", p.GetName()))
			return nil, ""
		}
		path := z.GetPath()
		if path == "" {
			path = "/api/v2/spans"
		}
		out.Provider = &tracev3.Tracing_Http{Name: ZipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.ZipkinConfig{
			CollectorCluster:         cluster,
			CollectorEndpoint:        path,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			CollectorHostname:        serviceHost(z.GetService()),
			TraceId_128Bit:           !z.GetEnable_64BitTraceId(),
		})}}
	default:
		b.skipProvider(tr.providerOf, fmt.Sprintf("tracing provider %q is not OpenTelemetry or Zipkin, which are the ones supported", p.GetName()))
		return nil, ""
	}
	return out, names[0]
}

// serviceHost strips the optional "namespace/" prefix Istio allows in a
// provider's service.
func serviceHost(service string) string {
	if _, host, ok := strings.Cut(service, "/"); ok {
		return host
	}
	return service
}

// cluster names the outbound cluster of a provider's service: the FQDN of
// a known service (a short "name.namespace" is completed), else the host
// as written.
func (b *builder) cluster(service string, port uint32) (string, bool) {
	host := serviceHost(service)
	if host == "" || port == 0 {
		return "", false
	}
	if len(b.push.ServicesByHost(host)) == 0 && b.push.DomainSuffix != "" && !strings.HasSuffix(host, "."+b.push.DomainSuffix) {
		for _, h := range []string{host + ".svc." + b.push.DomainSuffix, host + "." + b.push.DomainSuffix} {
			if len(b.push.ServicesByHost(h)) > 0 {
				host = h
				break
			}
		}
	}
	return xds.ClusterName(xds.Outbound, port, "", host), true
}

// serviceName is the tracing service name: the canonical service (label
// service.istio.io/canonical-name, else app, else the workload name) and
// the namespace.
func (b *builder) serviceName() string {
	l := b.proxy.Labels
	name := l["service.istio.io/canonical-name"]
	if name == "" {
		name = l["app.kubernetes.io/name"]
	}
	if name == "" {
		name = l["app"]
	}
	if name == "" {
		name = b.proxy.WorkloadName
	}
	if name == "" {
		name = b.proxy.PodName
	}
	return name + "." + b.proxy.Namespace
}

// customTags translates literal, environment and request header tags,
// sorted by tag name; formatter tags are reported as skipped.
func (b *builder) customTags(tr *tracingSpec) []*tracingtag.CustomTag {
	keys := make([]string, 0, len(tr.customTags))
	for k := range tr.customTags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []*tracingtag.CustomTag
	for _, k := range keys {
		t := tr.customTags[k]
		if k == "" {
			continue
		}
		ct := &tracingtag.CustomTag{Tag: k}
		switch {
		case t.GetLiteral() != nil:
			ct.Type = &tracingtag.CustomTag_Literal_{Literal: &tracingtag.CustomTag_Literal{Value: t.GetLiteral().GetValue()}}
		case t.GetEnvironment() != nil && t.GetEnvironment().GetName() != "":
			ct.Type = &tracingtag.CustomTag_Environment_{Environment: &tracingtag.CustomTag_Environment{
				Name: t.GetEnvironment().GetName(), DefaultValue: t.GetEnvironment().GetDefaultValue(),
			}}
		case t.GetHeader() != nil && validHeaderName(strings.ToLower(t.GetHeader().GetName())):
			ct.Type = &tracingtag.CustomTag_RequestHeader{RequestHeader: &tracingtag.CustomTag_Header{
				Name: strings.ToLower(t.GetHeader().GetName()), DefaultValue: t.GetHeader().GetDefaultValue(),
			}}
		default:
			b.skipProvider(tr.tagsOf, fmt.Sprintf("custom tag %q: only literal, environment and header tags are supported", k))
			continue
		}
		out = append(out, ct)
	}
	return out
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return true
}

// stats reports whether Istio's metrics are on: a Prometheus provider is
// selected (by a Telemetry, else meshConfig.defaultProviders.metrics, else
// the built-in "prometheus") and no override disables ALL_METRICS.
func (b *builder) stats(me *metricsSpec) bool {
	if me.disabled != nil && *me.disabled {
		return false
	}
	names := me.providers
	if len(names) == 0 {
		names = b.mesh.GetDefaultProviders().GetMetrics()
	}
	if len(names) == 0 {
		names = []string{BuiltinPrometheus}
	}
	on := false
	for _, n := range names {
		p := b.provider(n)
		switch {
		case p == nil && n == BuiltinPrometheus, p.GetPrometheus() != nil:
			on = true
		case p == nil:
			b.skipProvider(me.providerOf, fmt.Sprintf("metrics provider %q is not in meshConfig.extensionProviders", n))
		default:
			b.skipProvider(me.providerOf, fmt.Sprintf("metrics provider %q is not Prometheus, the one supported", n))
		}
	}
	return on
}

// accessLogs resolves the access log providers (a Telemetry's, else
// meshConfig.defaultProviders.accessLogging, else the legacy
// meshConfig.accessLogFile) into file access loggers.
func (b *builder) accessLogs(lg *loggingSpec) []*accesslogv3.AccessLog {
	if lg.disabled != nil && *lg.disabled {
		return nil
	}
	if lg.filterOf != nil {
		b.skip(string(model.KindTelemetry), lg.filterOf.Meta, "access log filter expressions are not supported; every request is logged")
	}
	names := lg.providers
	if len(names) == 0 {
		names = b.mesh.GetDefaultProviders().GetAccessLogging()
	}
	if len(names) == 0 {
		if path := b.mesh.GetAccessLogFile(); path != "" {
			format := b.mesh.GetAccessLogFormat()
			if b.mesh.GetAccessLogEncoding() == meshconfig.MeshConfig_JSON {
				b.skipMesh("accessLogEncoding JSON is not supported; the text format is used")
				format = ""
			}
			return []*accesslogv3.AccessLog{fileLog(path, format)}
		}
		return nil
	}
	var out []*accesslogv3.AccessLog
	for _, n := range names {
		p := b.provider(n)
		switch {
		case p == nil && n == BuiltinEnvoyLog:
			out = append(out, fileLog("/dev/stdout", ""))
		case p == nil:
			b.skipProvider(lg.providerOf, fmt.Sprintf("access log provider %q is not in meshConfig.extensionProviders", n))
		case p.GetEnvoyFileAccessLog() != nil:
			f := p.GetEnvoyFileAccessLog()
			path := f.GetPath()
			if path == "" {
				path = "/dev/stdout"
			}
			if f.GetLogFormat().GetLabels() != nil {
				b.skipProvider(lg.providerOf, fmt.Sprintf("access log provider %q: JSON labels are not supported; the default text format is used", n))
			}
			out = append(out, fileLog(path, f.GetLogFormat().GetText()))
		default:
			b.skipProvider(lg.providerOf, fmt.Sprintf("access log provider %q is not envoyFileAccessLog, the one supported", n))
		}
	}
	return out
}

func fileLog(path, format string) *accesslogv3.AccessLog {
	if format == "" {
		format = DefaultAccessLogFormat
	}
	if !strings.HasSuffix(format, "\n") {
		format += "\n"
	}
	return &accesslogv3.AccessLog{Name: FileAccessLog, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filelog.FileAccessLog{
		Path: path,
		AccessLogFormat: &filelog.FileAccessLog_LogFormat{LogFormat: &core.SubstitutionFormatString{
			Format: &core.SubstitutionFormatString_TextFormatSource{TextFormatSource: &core.DataSource{
				Specifier: &core.DataSource_InlineString{InlineString: format},
			}},
		}},
	})}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // only registered Envoy types are marshalled
	}
	return a
}
