package xds

import (
	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// MTLSMode is the mutual TLS mode of one inbound port; the values are those
// of internal/xds/security.Mode.
type MTLSMode int

// Modes, as PeerAuthentication names them.
const (
	MTLSDisable MTLSMode = iota + 1
	MTLSPermissive
	MTLSStrict
)

func (m MTLSMode) acceptsPlaintext() bool { return m == MTLSDisable || m == MTLSPermissive }
func (m MTLSMode) acceptsMTLS() bool      { return m == MTLSStrict || m == MTLSPermissive }

// TelemetrySettings is what the telemetry package decides for one proxy.
type TelemetrySettings struct {
	Tracing    *hcm.HttpConnectionManager_Tracing
	AccessLogs []*accesslog.AccessLog
	Stats      bool
}

// Hooks are the pieces of translation owned by internal/xds/security and
// internal/xds/telemetry. Those packages import this one (for names such as
// SecretDefault), so they cannot be imported here: the control plane plugs
// them in once at startup with SetHooks, before the first Generate. A nil
// field keeps the built-in default, which is Istio's behaviour with no
// security or telemetry resources at all (PERMISSIVE, no policy filters,
// standard metrics).
type Hooks struct {
	InboundMTLSMode       func(push *model.PushContext, proxy *model.Proxy, port uint32) MTLSMode
	InboundHTTPFilters    func(push *model.PushContext, proxy *model.Proxy, port uint32) []*hcm.HttpFilter
	InboundNetworkFilters func(push *model.PushContext, proxy *model.Proxy, port uint32) []*listener.Filter
	InboundTLSContext     func(http bool) *tls.DownstreamTlsContext
	IstioMutualUpstream   func(sni string, sans []string, alpn []string) *tls.UpstreamTlsContext
	Telemetry             func(push *model.PushContext, proxy *model.Proxy) TelemetrySettings
	StatsHTTPFilter       func(reporter string) *hcm.HttpFilter
	StatsNetworkFilter    func(reporter string) *listener.Filter
	// Skipped reports the security and telemetry objects those packages
	// left out for the proxy; they are added to Resources.Skipped.
	Skipped func(push *model.PushContext, proxy *model.Proxy) []Skipped
}

var hooks = defaultHooks()

// SetHooks installs the security and telemetry translation. It must be
// called before Generate runs concurrently (at startup); nil fields keep
// the defaults.
func SetHooks(h Hooks) {
	d := defaultHooks()
	if h.InboundMTLSMode == nil {
		h.InboundMTLSMode = d.InboundMTLSMode
	}
	if h.InboundHTTPFilters == nil {
		h.InboundHTTPFilters = d.InboundHTTPFilters
	}
	if h.InboundNetworkFilters == nil {
		h.InboundNetworkFilters = d.InboundNetworkFilters
	}
	if h.InboundTLSContext == nil {
		h.InboundTLSContext = d.InboundTLSContext
	}
	if h.IstioMutualUpstream == nil {
		h.IstioMutualUpstream = d.IstioMutualUpstream
	}
	if h.Telemetry == nil {
		h.Telemetry = d.Telemetry
	}
	if h.StatsHTTPFilter == nil {
		h.StatsHTTPFilter = d.StatsHTTPFilter
	}
	if h.StatsNetworkFilter == nil {
		h.StatsNetworkFilter = d.StatsNetworkFilter
	}
	if h.Skipped == nil {
		h.Skipped = d.Skipped
	}
	hooks = h
}

func defaultHooks() Hooks {
	return Hooks{
		InboundMTLSMode: func(*model.PushContext, *model.Proxy, uint32) MTLSMode { return MTLSPermissive },
		InboundHTTPFilters: func(*model.PushContext, *model.Proxy, uint32) []*hcm.HttpFilter {
			return nil
		},
		InboundNetworkFilters: func(*model.PushContext, *model.Proxy, uint32) []*listener.Filter { return nil },
		InboundTLSContext:     defaultInboundTLS,
		IstioMutualUpstream:   defaultIstioMutual,
		Telemetry: func(*model.PushContext, *model.Proxy) TelemetrySettings {
			return TelemetrySettings{Stats: true}
		},
		StatsHTTPFilter:    statsHTTPFilter,
		StatsNetworkFilter: statsNetworkFilter,
		Skipped:            func(*model.PushContext, *model.Proxy) []Skipped { return nil },
	}
}

func meshCommonTLS(alpn []string) *tls.CommonTlsContext {
	return &tls.CommonTlsContext{
		TlsParams:                      &tls.TlsParameters{TlsMinimumProtocolVersion: tls.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tls.SdsSecretConfig{{Name: SecretDefault}},
		AlpnProtocols:                  append([]string(nil), alpn...),
	}
}

func defaultInboundTLS(http bool) *tls.DownstreamTlsContext {
	var alpn []string
	if http {
		alpn = []string{"h2", "http/1.1"}
	}
	c := meshCommonTLS(alpn)
	c.ValidationContextType = &tls.CommonTlsContext_ValidationContextSdsSecretConfig{
		ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: SecretRootCA},
	}
	return &tls.DownstreamTlsContext{CommonTlsContext: c, RequireClientCertificate: wrapperspb.Bool(true)}
}

func defaultIstioMutual(sni string, sans []string, alpn []string) *tls.UpstreamTlsContext {
	c := meshCommonTLS(alpn)
	c.ValidationContextType = &tls.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tls.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tls.CertificateValidationContext{MatchTypedSubjectAltNames: sanMatchers(tls.SubjectAltNameMatcher_URI, sans)},
			ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: SecretRootCA},
		},
	}
	return &tls.UpstreamTlsContext{CommonTlsContext: c, Sni: sni}
}

func sanMatchers(t tls.SubjectAltNameMatcher_SanType, sans []string) []*tls.SubjectAltNameMatcher {
	var out []*tls.SubjectAltNameMatcher
	for _, s := range sans {
		out = append(out, &tls.SubjectAltNameMatcher{
			SanType: t,
			Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}},
		})
	}
	return out
}
