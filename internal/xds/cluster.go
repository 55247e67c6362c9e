package xds

import (
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rawbuffer "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

const defaultConnectTimeout = 10 * time.Second

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
		ResourceApiVersion:    core.ApiVersion_V3,
	}
}

func (g *gen) connectTimeout() *durationpb.Duration {
	if d := g.push.Mesh.GetConnectTimeout(); d != nil && d.AsDuration() > 0 {
		return durationpb.New(d.AsDuration())
	}
	return durationpb.New(defaultConnectTimeout)
}

func (g *gen) buildClusters() {
	g.clusters[PassthroughCluster] = &cluster.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
		LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       g.connectTimeout(),
	}
	g.clusters[BlackHoleCluster] = &cluster.Cluster{
		Name:                 BlackHoleCluster,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       g.connectTimeout(),
	}
	if g.proxy.Type != model.Router && !g.endpointsOnly {
		g.clusters[InboundPassthroughCluster] = &cluster.Cluster{
			Name:                 InboundPassthroughCluster,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
			LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:       g.connectTimeout(),
		}
		g.buildInboundClusters()
	}
	for _, svc := range g.services {
		dr := g.destinationRule(svc.Hostname, svc.Namespace)
		var spec *networking.DestinationRule
		if dr != nil {
			spec = dr.Spec
		}
		for _, port := range svc.Ports {
			if g.endpointsOnly && dr == nil {
				// nothing can fail without a DestinationRule: only the
				// EDS target matters
				if discoveryType(svc, policy{}) == cluster.Cluster_EDS {
					g.eds[ClusterName(Outbound, port.Port, "", svc.Hostname)] = edsTarget{svc: svc, port: port.Port}
				}
				continue
			}
			// build returns the clusters of the port; an invalid
			// DestinationRule is reported and the port falls back to
			// defaults.
			type built struct {
				c      *cluster.Cluster
				subset map[string]string
			}
			build := func(spec *networking.DestinationRule) []built {
				out := []built{{c: g.outboundCluster(svc, port, spec, nil)}}
				for _, ss := range spec.GetSubsets() {
					if ss.GetName() != "" {
						out = append(out, built{g.outboundCluster(svc, port, spec, ss), ss.GetLabels()})
					}
				}
				for _, b := range out {
					if err := b.c.ValidateAll(); err != nil {
						panic(fmt.Sprintf("cluster %s: %v", b.c.Name, err))
					}
				}
				return out
			}
			var out []built
			if dr == nil || !g.guard(model.KindDestinationRule, dr.Namespace, dr.Name, func() { out = build(spec) }) {
				g.guard("Service", svc.Namespace, svc.Name, func() { out = build(nil) })
			}
			for _, b := range out {
				g.clusters[b.c.Name] = b.c
				if b.c.GetType() == cluster.Cluster_EDS {
					g.eds[b.c.Name] = edsTarget{svc: svc, port: port.Port, subset: b.subset}
				}
			}
		}
	}
}

// discoveryType is how the proxy finds a cluster's endpoints.
func discoveryType(svc *model.Service, pol policy) cluster.Cluster_DiscoveryType {
	switch {
	case strings.HasPrefix(svc.Hostname, "*") || svc.Resolution == model.Passthrough ||
		pol.lb.GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH:
		return cluster.Cluster_ORIGINAL_DST
	case svc.Resolution == model.DNSLB:
		return cluster.Cluster_STRICT_DNS
	case svc.Resolution == model.DNSRoundRobinLB:
		return cluster.Cluster_LOGICAL_DNS
	}
	return cluster.Cluster_EDS
}

func (g *gen) outboundCluster(svc *model.Service, port model.Port, dr *networking.DestinationRule, ss *networking.Subset) *cluster.Cluster {
	subsetName := ss.GetName()
	name := ClusterName(Outbound, port.Port, subsetName, svc.Hostname)
	pol := effectivePolicy(dr, ss, port.Port)
	c := &cluster.Cluster{
		Name:           name,
		ConnectTimeout: g.connectTimeout(),
		Metadata:       clusterMetadata(svc, subsetName, port.Port),
	}
	if t := pol.pool.GetTcp().GetConnectTimeout(); t != nil && t.AsDuration() > 0 {
		c.ConnectTimeout = durationpb.New(t.AsDuration())
	}
	discovery := discoveryType(svc, pol)
	c.ClusterDiscoveryType = &cluster.Cluster_Type{Type: discovery}
	switch discovery {
	case cluster.Cluster_EDS:
		c.EdsClusterConfig = &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
	case cluster.Cluster_STRICT_DNS, cluster.Cluster_LOGICAL_DNS:
		c.LoadAssignment = g.dnsAssignment(name, svc, port, ss.GetLabels(), discovery == cluster.Cluster_LOGICAL_DNS)
		c.DnsLookupFamily = cluster.Cluster_V4_ONLY
	}
	applyLB(c, pol.lb)
	if discovery == cluster.Cluster_ORIGINAL_DST {
		c.LbPolicy = cluster.Cluster_CLUSTER_PROVIDED
		c.LbConfig = nil
	}
	c.CircuitBreakers = circuitBreakers(pol.pool)
	c.OutlierDetection = outlierDetection(pol.outlier)
	if opts := httpProtocolOptions(port.Protocol, pol.pool); opts != nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOpts: mustAny(opts)}
	}
	h2 := port.Protocol == model.ProtocolHTTP2 || port.Protocol == model.ProtocolGRPC
	switch {
	case pol.tls != nil && pol.tls.GetMode() != networking.ClientTLSSettings_DISABLE:
		if ctx := g.upstreamTLS(pol.tls, svc, port.Port, subsetName, h2); ctx != nil {
			c.TransportSocket = &core.TransportSocket{Name: SocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
		}
	case pol.tls == nil && !svc.MeshExternal && g.autoMTLS() && discovery != cluster.Cluster_ORIGINAL_DST:
		ctx := hooks.IstioMutualUpstream(OutboundSNI(port.Port, subsetName, svc.Hostname), g.serviceSANs(svc), istioALPN(h2))
		c.TransportSocketMatches = []*cluster.Cluster_TransportSocketMatch{
			{
				Name:            "tlsMode-istio",
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
				TransportSocket: &core.TransportSocket{Name: SocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}},
			},
			{
				Name:            "tlsMode-disabled",
				Match:           &structpb.Struct{},
				TransportSocket: rawBufferSocket(),
			},
		}
	}
	return c
}

func rawBufferSocket() *core.TransportSocket {
	return &core.TransportSocket{Name: SocketRawBuffer, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbuffer.RawBuffer{})}}
}

func istioALPN(h2 bool) []string {
	if h2 {
		return []string{"istio-peer-exchange", "istio", "h2"}
	}
	return []string{"istio-peer-exchange", "istio"}
}

func (g *gen) autoMTLS() bool {
	if v := g.push.Mesh.GetEnableAutoMtls(); v != nil {
		return v.GetValue()
	}
	return true
}

// serviceSANs are the SPIFFE identities of a service's endpoints.
func (g *gen) serviceSANs(svc *model.Service) []string {
	var sans []string
	for _, ep := range g.push.EndpointsOf(svc) {
		if ep != nil && ep.ServiceAccount != "" {
			ns := ep.Namespace
			if ns == "" {
				ns = svc.Namespace
			}
			sans = append(sans, SpiffeID(g.trustDomain(), ns, ep.ServiceAccount))
		}
	}
	return uniqueSorted(sans)
}

func (g *gen) trustDomain() string {
	if g.push.TrustDomain != "" {
		return g.push.TrustDomain
	}
	return "cluster.local"
}

func (g *gen) upstreamTLS(t *networking.ClientTLSSettings, svc *model.Service, port uint32, subset string, h2 bool) *tls.UpstreamTlsContext {
	if t.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL {
		sni := t.GetSni()
		if sni == "" {
			sni = OutboundSNI(port, subset, svc.Hostname)
		}
		sans := t.GetSubjectAltNames()
		if len(sans) == 0 {
			sans = g.serviceSANs(svc)
		}
		return hooks.IstioMutualUpstream(sni, sans, istioALPN(h2))
	}
	ctx := &tls.UpstreamTlsContext{CommonTlsContext: &tls.CommonTlsContext{}, Sni: t.GetSni()}
	if ctx.Sni == "" && !strings.HasPrefix(svc.Hostname, "*") {
		ctx.Sni = svc.Hostname
	}
	if h2 {
		ctx.CommonTlsContext.AlpnProtocols = []string{"h2"}
	}
	skipVerify := t.GetInsecureSkipVerify().GetValue()
	validation := &tls.CertificateValidationContext{}
	if !skipVerify {
		validation.MatchTypedSubjectAltNames = sanMatchers(tls.SubjectAltNameMatcher_DNS, t.GetSubjectAltNames())
	}
	cred := t.GetCredentialName()
	switch {
	case cred != "" && g.proxy.Type == model.Router:
		if t.GetMode() == networking.ClientTLSSettings_MUTUAL {
			ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tls.SdsSecretConfig{{Name: CredentialPrefix + cred, SdsConfig: adsSource()}}
			g.addCredential(cred, false)
		}
		if !skipVerify {
			ctx.CommonTlsContext.ValidationContextType = &tls.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tls.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         validation,
					ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: CredentialPrefix + cred + "-cacert", SdsConfig: adsSource()},
				},
			}
			g.addCredential(cred, true)
		}
	default:
		if t.GetMode() == networking.ClientTLSSettings_MUTUAL && t.GetClientCertificate() != "" && t.GetPrivateKey() != "" {
			ctx.CommonTlsContext.TlsCertificates = []*tls.TlsCertificate{{
				CertificateChain: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: t.GetClientCertificate()}},
				PrivateKey:       &core.DataSource{Specifier: &core.DataSource_Filename{Filename: t.GetPrivateKey()}},
			}}
		}
		if !skipVerify {
			if ca := t.GetCaCertificates(); ca != "" {
				validation.TrustedCa = &core.DataSource{Specifier: &core.DataSource_Filename{Filename: ca}}
			}
			// Without caCertificates there is nothing to verify the chain
			// against (Envoy and the proxy reject SAN matchers alone): the
			// server is not verified, as in Istio before
			// VERIFY_CERTIFICATE_AT_CLIENT.
			if validation.TrustedCa != nil {
				ctx.CommonTlsContext.ValidationContextType = &tls.CommonTlsContext_ValidationContext{ValidationContext: validation}
			}
		}
	}
	return ctx
}

func applyLB(c *cluster.Cluster, lb *networking.LoadBalancerSettings) {
	c.LbPolicy = cluster.Cluster_ROUND_ROBIN
	if ch := lb.GetConsistentHash(); ch != nil {
		if ch.GetMaglev() != nil {
			c.LbPolicy = cluster.Cluster_MAGLEV
			// Envoy needs a prime table size
			if t := ch.GetMaglev().GetTableSize(); t > 0 && t <= 5000011 && big.NewInt(int64(t)).ProbablyPrime(0) {
				c.LbConfig = &cluster.Cluster_MaglevLbConfig_{MaglevLbConfig: &cluster.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(t)}}
			}
			return
		}
		c.LbPolicy = cluster.Cluster_RING_HASH
		size := ch.GetMinimumRingSize()
		if r := ch.GetRingHash(); r != nil && r.GetMinimumRingSize() > 0 {
			size = r.GetMinimumRingSize()
		}
		if size > 0 && size <= 8388608 {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(size)}}
		}
		return
	}
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_LEAST_CONN, networking.LoadBalancerSettings_LEAST_REQUEST:
		c.LbPolicy = cluster.Cluster_LEAST_REQUEST
	case networking.LoadBalancerSettings_RANDOM:
		c.LbPolicy = cluster.Cluster_RANDOM
	case networking.LoadBalancerSettings_PASSTHROUGH:
		c.LbPolicy = cluster.Cluster_CLUSTER_PROVIDED // the cluster is ORIGINAL_DST
	}
}

// circuitBreakers mirrors Istio: limits the DestinationRule does not set
// are effectively unlimited rather than Envoy's defaults of 1024.
func circuitBreakers(pool *networking.ConnectionPoolSettings) *cluster.CircuitBreakers {
	limit := func(v int32) *wrapperspb.UInt32Value {
		if v > 0 {
			return wrapperspb.UInt32(uint32(v))
		}
		return wrapperspb.UInt32(math.MaxUint32)
	}
	return &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		Priority:           core.RoutingPriority_DEFAULT,
		MaxConnections:     limit(pool.GetTcp().GetMaxConnections()),
		MaxPendingRequests: limit(pool.GetHttp().GetHttp1MaxPendingRequests()),
		MaxRequests:        limit(pool.GetHttp().GetHttp2MaxRequests()),
		MaxRetries:         limit(pool.GetHttp().GetMaxRetries()),
	}}}
}

func outlierDetection(o *networking.OutlierDetection) *cluster.OutlierDetection {
	if o == nil {
		return nil
	}
	od := &cluster.OutlierDetection{}
	enforcing := func(v *wrapperspb.UInt32Value) *wrapperspb.UInt32Value {
		if v.GetValue() > 0 {
			return wrapperspb.UInt32(100)
		}
		return wrapperspb.UInt32(0)
	}
	c5xx := o.GetConsecutive_5XxErrors()
	if c5xx == nil && o.GetConsecutiveErrors() > 0 {
		c5xx = wrapperspb.UInt32(uint32(o.GetConsecutiveErrors()))
	}
	if c5xx != nil {
		od.Consecutive_5Xx = wrapperspb.UInt32(c5xx.GetValue())
		od.EnforcingConsecutive_5Xx = enforcing(c5xx)
	} else {
		od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
	}
	if gw := o.GetConsecutiveGatewayErrors(); gw != nil {
		od.ConsecutiveGatewayFailure = wrapperspb.UInt32(gw.GetValue())
		od.EnforcingConsecutiveGatewayFailure = enforcing(gw)
	}
	if d := o.GetInterval(); d != nil && d.AsDuration() > 0 {
		od.Interval = durationpb.New(d.AsDuration())
	}
	if d := o.GetBaseEjectionTime(); d != nil && d.AsDuration() > 0 {
		od.BaseEjectionTime = durationpb.New(d.AsDuration())
	}
	if p := o.GetMaxEjectionPercent(); p > 0 {
		od.MaxEjectionPercent = wrapperspb.UInt32(uint32(min(p, 100)))
	}
	return od
}

func httpProtocolOptions(proto model.Protocol, pool *networking.ConnectionPoolSettings) *upstreamhttp.HttpProtocolOptions {
	h := pool.GetHttp()
	h2 := proto == model.ProtocolHTTP2 || proto == model.ProtocolGRPC ||
		(proto == model.ProtocolHTTP && h.GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE)
	if !proto.IsHTTP() && proto != model.ProtocolUnsupported {
		return nil
	}
	opts := &upstreamhttp.HttpProtocolOptions{}
	h2opts := &core.Http2ProtocolOptions{}
	if n := h.GetMaxConcurrentStreams(); n > 0 {
		h2opts.MaxConcurrentStreams = wrapperspb.UInt32(uint32(n))
	}
	switch {
	case proto == model.ProtocolUnsupported || h.GetUseClientProtocol():
		opts.UpstreamProtocolOptions = &upstreamhttp.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttp.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &core.Http1ProtocolOptions{},
				Http2ProtocolOptions: h2opts,
			},
		}
	case h2:
		opts.UpstreamProtocolOptions = &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2opts},
		}}
	default:
		opts.UpstreamProtocolOptions = &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}},
		}}
	}
	common := &core.HttpProtocolOptions{}
	set := false
	if d := h.GetIdleTimeout(); d != nil && d.AsDuration() > 0 {
		common.IdleTimeout = durationpb.New(d.AsDuration())
		set = true
	}
	if n := h.GetMaxRequestsPerConnection(); n > 0 {
		common.MaxRequestsPerConnection = wrapperspb.UInt32(uint32(n))
		set = true
	}
	if set {
		opts.CommonHttpProtocolOptions = common
	}
	return opts
}

func clusterMetadata(svc *model.Service, subset string, port uint32) *core.Metadata {
	fields := map[string]*structpb.Value{
		"services": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
			structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
				"host":      structpb.NewStringValue(svc.Hostname),
				"name":      structpb.NewStringValue(svc.Name),
				"namespace": structpb.NewStringValue(svc.Namespace),
			}}),
		}}),
		"default_original_port": structpb.NewNumberValue(float64(port)),
	}
	if subset != "" {
		fields["subset"] = structpb.NewStringValue(subset)
	}
	return &core.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: fields}}}
}

// dnsAssignment lists the hostnames (or addresses) a DNS cluster resolves:
// the ServiceEntry's endpoints, else its host.
func (g *gen) dnsAssignment(name string, svc *model.Service, port model.Port, subset map[string]string, logical bool) *endpoint.ClusterLoadAssignment {
	var lbs []*endpoint.LbEndpoint
	found := false
	for _, ep := range g.push.EndpointsOf(svc) {
		if ep == nil || ep.Address == "" || (ep.ServicePort != 0 && ep.ServicePort != port.Port) {
			continue
		}
		found = true
		if !labelsMatch(subset, ep.Labels) {
			continue
		}
		p := ep.Port
		if p == 0 {
			p = port.Port
		}
		lbs = append(lbs, g.lbEndpoint(ep, p))
	}
	if !found {
		lbs = append(lbs, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(svc.Hostname, port.Port)}}})
	}
	if logical && len(lbs) > 1 {
		lbs = lbs[:1]
	}
	if len(lbs) == 0 {
		return &endpoint.ClusterLoadAssignment{ClusterName: name}
	}
	return &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}
