package security

import (
	"errors"
	"fmt"
	"strings"

	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

type authzPolicy = model.Config[*securityv1beta1.AuthorizationPolicy]

// ruleCtx translates one AuthorizationPolicy rule. Each field, condition
// and source/operation is a term of an AND; a term that cannot be enforced
// (an HTTP-only field on a TCP chain, a value that cannot be translated)
// is handled so that the result fails closed:
//   - in a DENY policy the term is dropped, so the rule denies more;
//   - in ALLOW and AUDIT policies the whole rule is dropped, so it matches
//     nothing (and allows nothing).
type ruleCtx struct {
	http     bool // the chain is HTTP: request fields can be enforced
	deny     bool
	err      error // the first untranslatable term, for Skipped
	dropRule bool
}

func (c *ruleCtx) fail(err error) {
	if c.err == nil {
		c.err = err
	}
	if !c.deny {
		c.dropRule = true
	}
}

// unenforceable handles an HTTP-only field on a TCP chain; it reports
// whether the caller must leave the term out.
func (c *ruleCtx) unenforceable(httpOnly bool) bool {
	if !httpOnly || c.http {
		return false
	}
	if !c.deny {
		c.dropRule = true
	}
	return true
}

// idTerm ORs the principals of every value; neg negates the result.
// It returns nil when the term is absent or left out.
func (c *ruleCtx) idTerm(field string, httpOnly, neg bool, vals []string, one func(string) (*rbac.Principal, error)) *rbac.Principal {
	if len(vals) == 0 || c.unenforceable(httpOnly) {
		return nil
	}
	ids := make([]*rbac.Principal, 0, len(vals))
	for _, v := range vals {
		p, err := one(v)
		if err != nil {
			c.fail(fmt.Errorf("%s: %w", field, err))
			return nil
		}
		ids = append(ids, p)
	}
	if neg {
		return notID(orIDs(ids))
	}
	return orIDs(ids)
}

func (c *ruleCtx) permTerm(field string, httpOnly, neg bool, vals []string, one func(string) (*rbac.Permission, error)) *rbac.Permission {
	if len(vals) == 0 || c.unenforceable(httpOnly) {
		return nil
	}
	rules := make([]*rbac.Permission, 0, len(vals))
	for _, v := range vals {
		p, err := one(v)
		if err != nil {
			c.fail(fmt.Errorf("%s: %w", field, err))
			return nil
		}
		rules = append(rules, p)
	}
	if neg {
		return notRule(orRules(rules))
	}
	return orRules(rules)
}

// Value translators, one per kind of Istio value.

func principalID(v string) (*rbac.Principal, error) {
	return principalName(stringMatch(v, "spiffe://", false)), nil
}

func namespaceID(v string) (*rbac.Principal, error) {
	if v == "" {
		return nil, errors.New("empty namespace")
	}
	return principalName(regexMatch("spiffe://.*/ns/" + globRegex(v) + "/sa/.*")), nil
}

func serviceAccountID(v string) (*rbac.Principal, error) {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
		return nil, fmt.Errorf("service account %q is not namespace/name", v)
	}
	return principalName(regexMatch("spiffe://.*/ns/" + globRegex(ns) + "/sa/" + globRegex(sa))), nil
}

func trustDomainID(v string) (*rbac.Principal, error) {
	if v == "" {
		return nil, errors.New("empty trust domain")
	}
	if v == "*" {
		return principalName(stringMatch("*", "", false)), nil
	}
	return principalName(regexMatch("spiffe://" + globRegex(v) + "/.*")), nil
}

func directIPID(v string) (*rbac.Principal, error) {
	r, err := cidr(v)
	if err != nil {
		return nil, err
	}
	return &rbac.Principal{Identifier: &rbac.Principal_DirectRemoteIp{DirectRemoteIp: r}}, nil
}

func remoteIPID(v string) (*rbac.Principal, error) {
	r, err := cidr(v)
	if err != nil {
		return nil, err
	}
	return &rbac.Principal{Identifier: &rbac.Principal_RemoteIp{RemoteIp: r}}, nil
}

func requestPrincipalID(v string) (*rbac.Principal, error) {
	return &rbac.Principal{Identifier: &rbac.Principal_Metadata{Metadata: authnMetadata(AuthnPrincipal, nil, stringValue(v))}}, nil
}

// stringOrListValue matches a metadata value that is a string matching v,
// or a list with an element matching v (claims and audiences).
func stringOrListValue(v string) *matcher.ValueMatcher {
	return &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_OrMatch{OrMatch: &matcher.OrMatcher{
		ValueMatchers: []*matcher.ValueMatcher{stringValue(v), listValue(v)},
	}}}
}

func headerID(name string) func(string) (*rbac.Principal, error) {
	return func(v string) (*rbac.Principal, error) {
		h, err := headerMatch(name, v, false)
		if err != nil {
			return nil, err
		}
		return &rbac.Principal{Identifier: &rbac.Principal_Header{Header: h}}, nil
	}
}

func authnID(key string, path []string, list bool) func(string) (*rbac.Principal, error) {
	return func(v string) (*rbac.Principal, error) {
		vm := stringValue(v)
		if list {
			vm = stringOrListValue(v)
		}
		return &rbac.Principal{Identifier: &rbac.Principal_Metadata{Metadata: authnMetadata(key, path, vm)}}, nil
	}
}

func headerPerm(name string, ignoreCase bool) func(string) (*rbac.Permission, error) {
	return func(v string) (*rbac.Permission, error) {
		h, err := headerMatch(name, v, ignoreCase)
		if err != nil {
			return nil, err
		}
		return &rbac.Permission{Rule: &rbac.Permission_Header{Header: h}}, nil
	}
}

func portPerm(v string) (*rbac.Permission, error) {
	p, err := port(v)
	if err != nil {
		return nil, err
	}
	return &rbac.Permission{Rule: &rbac.Permission_DestinationPort{DestinationPort: p}}, nil
}

func pathPerm(v string) (*rbac.Permission, error) {
	m, err := pathMatch(v)
	if err != nil {
		return nil, err
	}
	return &rbac.Permission{Rule: &rbac.Permission_UrlPath{UrlPath: m}}, nil
}

func destinationIPPerm(v string) (*rbac.Permission, error) {
	r, err := cidr(v)
	if err != nil {
		return nil, err
	}
	return &rbac.Permission{Rule: &rbac.Permission_DestinationIp{DestinationIp: r}}, nil
}

// source ANDs the fields of one rule.from[].source.
func (c *ruleCtx) source(s *securityv1beta1.Source) *rbac.Principal {
	terms := []*rbac.Principal{
		c.idTerm("principals", false, false, s.GetPrincipals(), principalID),
		c.idTerm("notPrincipals", false, true, s.GetNotPrincipals(), principalID),
		c.idTerm("requestPrincipals", true, false, s.GetRequestPrincipals(), requestPrincipalID),
		c.idTerm("notRequestPrincipals", true, true, s.GetNotRequestPrincipals(), requestPrincipalID),
		c.idTerm("namespaces", false, false, s.GetNamespaces(), namespaceID),
		c.idTerm("notNamespaces", false, true, s.GetNotNamespaces(), namespaceID),
		c.idTerm("serviceAccounts", false, false, s.GetServiceAccounts(), serviceAccountID),
		c.idTerm("notServiceAccounts", false, true, s.GetNotServiceAccounts(), serviceAccountID),
		c.idTerm("trustDomains", false, false, s.GetTrustDomains(), trustDomainID),
		c.idTerm("notTrustDomains", false, true, s.GetNotTrustDomains(), trustDomainID),
		c.idTerm("ipBlocks", false, false, s.GetIpBlocks(), directIPID),
		c.idTerm("notIpBlocks", false, true, s.GetNotIpBlocks(), directIPID),
		c.idTerm("remoteIpBlocks", false, false, s.GetRemoteIpBlocks(), remoteIPID),
		c.idTerm("notRemoteIpBlocks", false, true, s.GetNotRemoteIpBlocks(), remoteIPID),
	}
	return andIDs(compact(terms))
}

// operation ANDs the fields of one rule.to[].operation.
func (c *ruleCtx) operation(o *securityv1beta1.Operation) *rbac.Permission {
	terms := []*rbac.Permission{
		c.permTerm("hosts", true, false, o.GetHosts(), headerPerm(":authority", true)),
		c.permTerm("notHosts", true, true, o.GetNotHosts(), headerPerm(":authority", true)),
		c.permTerm("ports", false, false, o.GetPorts(), portPerm),
		c.permTerm("notPorts", false, true, o.GetNotPorts(), portPerm),
		c.permTerm("methods", true, false, o.GetMethods(), headerPerm(":method", false)),
		c.permTerm("notMethods", true, true, o.GetNotMethods(), headerPerm(":method", false)),
		c.permTerm("paths", true, false, o.GetPaths(), pathPerm),
		c.permTerm("notPaths", true, true, o.GetNotPaths(), pathPerm),
	}
	return andRules(compact(terms))
}

// bracketed splits "request.auth.claims[a][b]" after prefix into [a b].
func bracketed(key, prefix string) ([]string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || !strings.HasPrefix(rest, "[") || !strings.HasSuffix(rest, "]") {
		return nil, false
	}
	parts := strings.Split(rest[1:len(rest)-1], "][")
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, "[]") {
			return nil, false
		}
	}
	return parts, true
}

// condition translates one rule.when[] entry: the OR of its values AND the
// negated OR of its notValues.
func (c *ruleCtx) condition(w *securityv1beta1.Condition) (*rbac.Principal, *rbac.Permission) {
	key := w.GetKey()
	if len(w.GetValues()) == 0 && len(w.GetNotValues()) == 0 {
		c.fail(fmt.Errorf("condition %q has neither values nor notValues", key))
		return nil, nil
	}
	var (
		id       func(string) (*rbac.Principal, error)
		perm     func(string) (*rbac.Permission, error)
		httpOnly bool
	)
	switch key {
	case "source.ip":
		id = directIPID
	case "remote.ip":
		id = remoteIPID
	case "source.namespace":
		id = namespaceID
	case "source.principal":
		id = principalID
	case "source.serviceAccount":
		id = serviceAccountID
	case "request.auth.principal":
		id, httpOnly = authnID(AuthnPrincipal, nil, false), true
	case "request.auth.audiences":
		id, httpOnly = authnID(AuthnAudiences, nil, true), true
	case "request.auth.presenter":
		id, httpOnly = authnID(AuthnPresenter, nil, false), true
	case "destination.ip":
		perm = destinationIPPerm
	case "destination.port":
		perm = portPerm
	default:
		if name, ok := bracketed(key, "request.headers"); ok && len(name) == 1 {
			id, httpOnly = headerID(name[0]), true
		} else if path, ok := bracketed(key, AuthnClaims); ok {
			id, httpOnly = authnID(AuthnClaims, path, true), true
		} else {
			c.fail(fmt.Errorf("condition key %q is not supported", key))
			return nil, nil
		}
	}
	if id != nil {
		terms := compact([]*rbac.Principal{
			c.idTerm(key, httpOnly, false, w.GetValues(), id),
			c.idTerm(key, httpOnly, true, w.GetNotValues(), id),
		})
		if len(terms) == 0 {
			return nil, nil
		}
		return andIDs(terms), nil
	}
	terms := compact([]*rbac.Permission{
		c.permTerm(key, httpOnly, false, w.GetValues(), perm),
		c.permTerm(key, httpOnly, true, w.GetNotValues(), perm),
	})
	if len(terms) == 0 {
		return nil, nil
	}
	return nil, andRules(terms)
}

// rule translates one rule into an Envoy policy: (any from) AND (any to)
// AND every condition. nil means the rule matches nothing.
func (c *ruleCtx) rule(r *securityv1beta1.Rule) *rbac.Policy {
	var ids []*rbac.Principal
	var perms []*rbac.Permission
	if from := r.GetFrom(); len(from) > 0 {
		alts := make([]*rbac.Principal, 0, len(from))
		for _, f := range from {
			alts = append(alts, c.source(f.GetSource()))
		}
		ids = append(ids, orIDs(alts))
	}
	if to := r.GetTo(); len(to) > 0 {
		alts := make([]*rbac.Permission, 0, len(to))
		for _, t := range to {
			alts = append(alts, c.operation(t.GetOperation()))
		}
		perms = append(perms, orRules(alts))
	}
	for _, w := range r.GetWhen() {
		id, perm := c.condition(w)
		if id != nil {
			ids = append(ids, id)
		}
		if perm != nil {
			perms = append(perms, perm)
		}
	}
	if c.dropRule {
		return nil
	}
	return &rbac.Policy{
		Permissions: []*rbac.Permission{andRules(perms)},
		Principals:  []*rbac.Principal{andIDs(ids)},
	}
}

func compact[T any](in []*T) []*T {
	out := in[:0]
	for _, v := range in {
		if v != nil {
			out = append(out, v)
		}
	}
	return out
}

// PolicyName is the key of one rule in the Envoy RBAC policies map.
func PolicyName(namespace, name string, rule int) string {
	return fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", namespace, name, rule)
}

// rbacFor translates the rules of policies into one Envoy RBAC config with
// the given action. http says whether request-level fields can be
// enforced. Untranslatable parts are reported through skip.
func rbacFor(policies []*authzPolicy, action rbac.RBAC_Action, http bool, skip func(*authzPolicy, string)) *rbac.RBAC {
	out := &rbac.RBAC{Action: action, Policies: map[string]*rbac.Policy{}}
	for _, p := range policies {
		for i, r := range p.Spec.GetRules() {
			c := ruleCtx{http: http, deny: action == rbac.RBAC_DENY}
			pol := c.rule(r)
			if c.err != nil && skip != nil {
				consequence := "the rule matches nothing"
				if c.deny {
					consequence = "the term is ignored, so the rule denies more"
				}
				skip(p, fmt.Sprintf("rule %d: %v: %s", i, c.err, consequence))
			}
			if pol != nil {
				out.Policies[PolicyName(p.Namespace, p.Name, i)] = pol
			}
		}
	}
	return out
}
