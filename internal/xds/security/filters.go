package security

import (
	"fmt"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// Filter names (docs/xds.md).
const (
	JWTAuthnFilter    = "envoy.filters.http.jwt_authn"
	HTTPRBACFilter    = "envoy.filters.http.rbac"
	NetworkRBACFilter = "envoy.filters.network.rbac"
	// NetworkRBACStatPrefix prefixes the network RBAC filter's stats.
	NetworkRBACStatPrefix = "tcp."
)

// builder collects what translation for one proxy skipped.
type builder struct {
	push  *model.PushContext
	proxy *model.Proxy
	skip  []xds.Skipped
	seen  map[xds.Skipped]bool
}

func newBuilder(push *model.PushContext, proxy *model.Proxy) *builder {
	return &builder{push: push, proxy: proxy, seen: map[xds.Skipped]bool{}}
}

func (b *builder) skipped(kind model.Kind, m model.Meta, reason string) {
	s := xds.Skipped{Kind: string(kind), Namespace: m.Namespace, Name: m.Name, Reason: reason}
	if !b.seen[s] {
		b.seen[s] = true
		b.skip = append(b.skip, s)
	}
}

func (b *builder) skipAuthz(p *authzPolicy, reason string) {
	b.skipped(model.KindAuthorizationPolicy, p.Meta, reason)
}

// authzPolicies returns the AuthorizationPolicies that apply to the proxy,
// oldest first, by action. CUSTOM policies (external authorization) and
// targetRef policies are reported as skipped.
func (b *builder) authzPolicies() (deny, allow, audit []*authzPolicy) {
	for _, i := range oldestFirst(b.push.AuthorizationPolicies) {
		p := &b.push.AuthorizationPolicies[i]
		if !appliesMeshOrNamespace(b.push, b.proxy, p.Namespace, p.Spec.GetSelector()) {
			continue
		}
		if hasTargetRef(p.Spec.GetTargetRef(), p.Spec.GetTargetRefs()) {
			b.skipAuthz(p, "targetRef policies apply to Gateway API gateways and waypoints, not to this proxy")
			continue
		}
		switch p.Spec.GetAction() {
		case securityv1beta1.AuthorizationPolicy_ALLOW:
			allow = append(allow, p)
		case securityv1beta1.AuthorizationPolicy_DENY:
			deny = append(deny, p)
		case securityv1beta1.AuthorizationPolicy_AUDIT:
			audit = append(audit, p)
		case securityv1beta1.AuthorizationPolicy_CUSTOM:
			b.skipAuthz(p, "action CUSTOM (external authorization) is not supported")
		default:
			b.skipAuthz(p, fmt.Sprintf("unknown action %v", p.Spec.GetAction()))
		}
	}
	return deny, allow, audit
}

// rbacConfigs returns the enforcing DENY and ALLOW configs and the AUDIT
// config for shadow_rules (action LOG). DENY and AUDIT are nil when no
// rule of theirs survives; ALLOW is nil only when no ALLOW policy applies.
func (b *builder) rbacConfigs(http bool) (deny, allow, audit *rbac.RBAC) {
	d, a, au := b.authzPolicies()
	if len(d) > 0 {
		if deny = rbacFor(d, rbac.RBAC_DENY, http, b.skipAuthz); len(deny.Policies) == 0 {
			deny = nil
		}
	}
	if len(a) > 0 {
		// Present even when no rule survives: an ALLOW policy that
		// matches nothing denies every request.
		allow = rbacFor(a, rbac.RBAC_ALLOW, http, b.skipAuthz)
	}
	if len(au) > 0 {
		if audit = rbacFor(au, rbac.RBAC_LOG, http, b.skipAuthz); len(audit.Policies) == 0 {
			audit = nil
		}
	}
	return deny, allow, audit
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // only registered Envoy types are marshalled
	}
	return a
}

// InboundHTTPFilters returns the security HTTP filters of an inbound HTTP
// chain for the workload port, in docs/xds.md order: jwt_authn (when a
// RequestAuthentication selects the proxy), rbac DENY, rbac ALLOW, and
// rbac with AUDIT policies as shadow_rules (action LOG, nothing enforced).
// Each is present only when some policy needs it. The caller appends the
// remaining filters (fault, cors, stats, router). Policies are not scoped
// by port (ports and destination.port are rules the proxy evaluates), so
// the result is the same for every port of the proxy.
func InboundHTTPFilters(push *model.PushContext, proxy *model.Proxy, port uint32) []*hcm.HttpFilter {
	b := newBuilder(push, proxy)
	return b.httpFilters()
}

func (b *builder) httpFilters() []*hcm.HttpFilter {
	var out []*hcm.HttpFilter
	if cfg := b.jwtAuthentication(); cfg != nil {
		out = append(out, &hcm.HttpFilter{Name: JWTAuthnFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}})
	}
	deny, allow, audit := b.rbacConfigs(true)
	for _, r := range []*rbac.RBAC{deny, allow} {
		if r != nil {
			out = append(out, &hcm.HttpFilter{Name: HTTPRBACFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttp.RBAC{Rules: r})}})
		}
	}
	if audit != nil {
		out = append(out, &hcm.HttpFilter{Name: HTTPRBACFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttp.RBAC{
			ShadowRules: audit, ShadowRulesStatPrefix: "istio_dry_run_",
		})}})
	}
	return out
}

// InboundNetworkFilters returns the network rbac filters of an inbound TCP
// chain for the workload port (DENY, ALLOW, AUDIT as shadow_rules), with
// only the connection-level parts of the policies: in an ALLOW (or AUDIT)
// policy a rule that uses an HTTP-only field (requestPrincipals, hosts,
// methods, paths, request.* conditions) matches nothing; in a DENY policy
// those fields are dropped, so it denies more.
func InboundNetworkFilters(push *model.PushContext, proxy *model.Proxy, port uint32) []*listener.Filter {
	b := newBuilder(push, proxy)
	deny, allow, audit := b.rbacConfigs(false)
	var out []*listener.Filter
	for _, r := range []*rbac.RBAC{deny, allow} {
		if r != nil {
			out = append(out, &listener.Filter{Name: NetworkRBACFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&rbacnet.RBAC{
				Rules: r, StatPrefix: NetworkRBACStatPrefix,
			})}})
		}
	}
	if audit != nil {
		out = append(out, &listener.Filter{Name: NetworkRBACFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&rbacnet.RBAC{
			ShadowRules: audit, StatPrefix: NetworkRBACStatPrefix, ShadowRulesStatPrefix: "istio_dry_run_",
		})}})
	}
	return out
}

// SkippedFor lists the security objects, or parts of them, that
// translation for the proxy left out, with the reason and its effect; the
// caller adds them to xds.Resources.Skipped. It is the same for every port.
func SkippedFor(push *model.PushContext, proxy *model.Proxy) []xds.Skipped {
	b := newBuilder(push, proxy)
	b.httpFilters()
	return b.skip
}
