// Package rbac evaluates Envoy RBAC policies (as the control plane
// translates AuthorizationPolicy) for HTTP requests and TCP connections.
package rbac

import (
	"fmt"
	"net/http"
	"net/netip"
	"sort"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Kind says what a policy applies to: network policies may only use
// connection-level fields.
type Kind int

const (
	HTTP Kind = iota
	Network
)

// MetadataNamespace is the filter metadata namespace of request
// authentication results (request.auth.*).
const MetadataNamespace = "istio_authn"

// Request is what policies are evaluated against.
type Request struct {
	// Principal is the peer's SPIFFE identity from mTLS, "" if none.
	Principal       string
	DirectRemoteIP  netip.Addr
	RemoteIP        netip.Addr // from x-forwarded-for when trusted, else = DirectRemoteIP
	DestinationIP   netip.Addr
	DestinationPort uint16
	ServerName      string

	Method, Host, Scheme string
	Path                 string // without query
	RawPath              string // with query (":path")
	Headers              http.Header
	// Metadata is the istio_authn metadata: "request.auth.principal",
	// "request.auth.audiences", "request.auth.presenter" and
	// "request.auth.claims" (a map of claims).
	Metadata map[string]any
}

// Decision is an evaluation result.
type Decision struct {
	// Allowed is the enforced outcome.
	Allowed bool
	// Policy is the name of the policy that matched ("" none).
	Policy string
	// ShadowAllowed and ShadowPolicy are the shadow rules' outcome, only
	// logged.
	ShadowAllowed bool
	ShadowPolicy  string
	HasShadow     bool
}

// Engine is compiled rules plus shadow rules.
type Engine struct {
	rules  *policySet
	shadow *policySet
}

type policySet struct {
	action rbacv3.RBAC_Action
	names  []string
	pols   []policy
}

type policy struct {
	perms  []func(*Request) bool
	princs []func(*Request) bool
}

// Compile compiles rules (nil = no enforcement) and shadow rules (nil =
// none). Any field this engine does not implement is an error.
func Compile(rules, shadow *rbacv3.RBAC, kind Kind) (*Engine, error) {
	e := &Engine{}
	var err error
	if rules != nil {
		if e.rules, err = compileSet(rules, kind); err != nil {
			return nil, err
		}
	}
	if shadow != nil {
		if e.shadow, err = compileSet(shadow, kind); err != nil {
			return nil, fmt.Errorf("shadow rules: %w", err)
		}
	}
	return e, nil
}

func compileSet(r *rbacv3.RBAC, kind Kind) (*policySet, error) {
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW, rbacv3.RBAC_DENY, rbacv3.RBAC_LOG:
	default:
		return nil, fmt.Errorf("action %s is not supported", r.GetAction())
	}
	ps := &policySet{action: r.GetAction()}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	c := compiler{kind: kind}
	for _, n := range names {
		p := r.GetPolicies()[n]
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return nil, fmt.Errorf("policy %s: conditions are not supported", n)
		}
		var cp policy
		for _, perm := range p.GetPermissions() {
			f, err := c.permission(perm)
			if err != nil {
				return nil, fmt.Errorf("policy %s: %w", n, err)
			}
			cp.perms = append(cp.perms, f)
		}
		for _, pr := range p.GetPrincipals() {
			f, err := c.principal(pr)
			if err != nil {
				return nil, fmt.Errorf("policy %s: %w", n, err)
			}
			cp.princs = append(cp.princs, f)
		}
		ps.names = append(ps.names, n)
		ps.pols = append(ps.pols, cp)
	}
	return ps, nil
}

// match returns the first policy (by name) whose permissions and
// principals both match: any permission and any principal.
func (ps *policySet) match(r *Request) (string, bool) {
	for i, p := range ps.pols {
		if anyOf(p.perms, r) && anyOf(p.princs, r) {
			return ps.names[i], true
		}
	}
	return "", false
}

func (ps *policySet) decide(r *Request) (bool, string) {
	name, hit := ps.match(r)
	switch ps.action {
	case rbacv3.RBAC_ALLOW:
		return hit, name
	case rbacv3.RBAC_DENY:
		return !hit, name
	}
	return true, name // LOG
}

// Evaluate decides r.
func (e *Engine) Evaluate(r *Request) Decision {
	d := Decision{Allowed: true, ShadowAllowed: true}
	if e.rules != nil {
		d.Allowed, d.Policy = e.rules.decide(r)
	}
	if e.shadow != nil {
		d.HasShadow = true
		d.ShadowAllowed, d.ShadowPolicy = e.shadow.decide(r)
	}
	return d
}

func anyOf(fs []func(*Request) bool, r *Request) bool {
	for _, f := range fs {
		if f(r) {
			return true
		}
	}
	return false
}

func allOf(fs []func(*Request) bool, r *Request) bool {
	for _, f := range fs {
		if !f(r) {
			return false
		}
	}
	return true
}

type compiler struct{ kind Kind }

func (c compiler) httpOnly(what string) error {
	if c.kind == Network {
		return fmt.Errorf("%s is not available to network policies", what)
	}
	return nil
}

func (c compiler) permission(p *rbacv3.Permission) (func(*Request) bool, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return func(*Request) bool { return true }, nil
	case *rbacv3.Permission_AndRules:
		fs, err := c.permissions(r.AndRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return allOf(fs, q) }, nil
	case *rbacv3.Permission_OrRules:
		fs, err := c.permissions(r.OrRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return anyOf(fs, q) }, nil
	case *rbacv3.Permission_NotRule:
		f, err := c.permission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return !f(q) }, nil
	case *rbacv3.Permission_Header:
		if err := c.httpOnly("header"); err != nil {
			return nil, err
		}
		return headerMatch(r.Header)
	case *rbacv3.Permission_UrlPath:
		if err := c.httpOnly("url_path"); err != nil {
			return nil, err
		}
		return pathMatch(r.UrlPath)
	case *rbacv3.Permission_DestinationIp:
		p, err := cidr(r.DestinationIp)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return q.DestinationIP.IsValid() && p.Contains(q.DestinationIP.Unmap()) }, nil
	case *rbacv3.Permission_DestinationPort:
		port := r.DestinationPort
		return func(q *Request) bool { return uint32(q.DestinationPort) == port }, nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		return func(q *Request) bool { p := int32(q.DestinationPort); return p >= lo && p < hi }, nil
	case *rbacv3.Permission_RequestedServerName:
		f, err := StringMatch(r.RequestedServerName)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return f(q.ServerName) }, nil
	case *rbacv3.Permission_Metadata:
		if err := c.httpOnly("metadata"); err != nil {
			return nil, err
		}
		return metadataMatch(r.Metadata)
	default:
		return nil, fmt.Errorf("permission %T is not supported", r)
	}
}

func (c compiler) permissions(ps []*rbacv3.Permission) ([]func(*Request) bool, error) {
	var out []func(*Request) bool
	for _, p := range ps {
		f, err := c.permission(p)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func (c compiler) principals(ps []*rbacv3.Principal) ([]func(*Request) bool, error) {
	var out []func(*Request) bool
	for _, p := range ps {
		f, err := c.principal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func (c compiler) principal(p *rbacv3.Principal) (func(*Request) bool, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return func(*Request) bool { return true }, nil
	case *rbacv3.Principal_AndIds:
		fs, err := c.principals(id.AndIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return allOf(fs, q) }, nil
	case *rbacv3.Principal_OrIds:
		fs, err := c.principals(id.OrIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return anyOf(fs, q) }, nil
	case *rbacv3.Principal_NotId:
		f, err := c.principal(id.NotId)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return !f(q) }, nil
	case *rbacv3.Principal_Authenticated_:
		pn := id.Authenticated.GetPrincipalName()
		if pn == nil {
			// Any authenticated peer.
			return func(q *Request) bool { return q.Principal != "" }, nil
		}
		f, err := StringMatch(pn)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return q.Principal != "" && f(q.Principal) }, nil
	case *rbacv3.Principal_DirectRemoteIp:
		pfx, err := cidr(id.DirectRemoteIp)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return q.DirectRemoteIP.IsValid() && pfx.Contains(q.DirectRemoteIP.Unmap()) }, nil
	case *rbacv3.Principal_SourceIp:
		pfx, err := cidr(id.SourceIp)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool { return q.DirectRemoteIP.IsValid() && pfx.Contains(q.DirectRemoteIP.Unmap()) }, nil
	case *rbacv3.Principal_RemoteIp:
		pfx, err := cidr(id.RemoteIp)
		if err != nil {
			return nil, err
		}
		return func(q *Request) bool {
			ip := q.RemoteIP
			if !ip.IsValid() {
				ip = q.DirectRemoteIP
			}
			return ip.IsValid() && pfx.Contains(ip.Unmap())
		}, nil
	case *rbacv3.Principal_Header:
		if err := c.httpOnly("header"); err != nil {
			return nil, err
		}
		return headerMatch(id.Header)
	case *rbacv3.Principal_UrlPath:
		if err := c.httpOnly("url_path"); err != nil {
			return nil, err
		}
		return pathMatch(id.UrlPath)
	case *rbacv3.Principal_Metadata:
		if err := c.httpOnly("metadata"); err != nil {
			return nil, err
		}
		return metadataMatch(id.Metadata)
	default:
		return nil, fmt.Errorf("principal %T is not supported", id)
	}
}

func pathMatch(m *matcher.PathMatcher) (func(*Request) bool, error) {
	f, err := StringMatch(m.GetPath())
	if err != nil {
		return nil, fmt.Errorf("url_path: %w", err)
	}
	return func(q *Request) bool { return f(q.Path) }, nil
}

func metadataMatch(m *matcher.MetadataMatcher) (func(*Request) bool, error) {
	if m.GetFilter() != MetadataNamespace {
		return nil, fmt.Errorf("metadata filter %q is not supported (only %s)", m.GetFilter(), MetadataNamespace)
	}
	var path []string
	for _, seg := range m.GetPath() {
		path = append(path, seg.GetKey())
	}
	if len(path) == 0 {
		return nil, fmt.Errorf("metadata matcher without path")
	}
	vm, err := valueMatch(m.GetValue())
	if err != nil {
		return nil, fmt.Errorf("metadata %v: %w", path, err)
	}
	invert := m.GetInvert()
	return func(q *Request) bool {
		var cur any = q.Metadata
		ok := q.Metadata != nil
		for _, k := range path {
			mm, isMap := cur.(map[string]any)
			if !ok || !isMap {
				ok = false
				break
			}
			cur, ok = mm[k]
		}
		return vm(cur, ok) != invert
	}, nil
}

func cidr(r *core.CidrRange) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %q: %w", r.GetAddressPrefix(), err)
	}
	ip = ip.Unmap()
	bits := ip.BitLen()
	if r.GetPrefixLen() != nil {
		bits = int(r.GetPrefixLen().GetValue())
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %s/%d: %w", r.GetAddressPrefix(), bits, err)
	}
	return p, nil
}
