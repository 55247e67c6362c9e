package validation

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// checkPolicyTarget checks the selector and targetRef(s) common to the
// security and telemetry kinds: at most one of them.
func checkPolicyTarget(p *field.Path, sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference, e *errorList) {
	set := 0
	for _, b := range []bool{sel != nil, ref != nil, len(refs) > 0} {
		if b {
			set++
		}
	}
	if set > 1 {
		e.add(p, "only one of selector, targetRef and targetRefs may be set")
	}
	if sel != nil {
		checkLabels(p.Child("selector", "matchLabels"), sel.MatchLabels, e)
	}
	if ref != nil {
		checkTargetRef(p.Child("targetRef"), ref, e)
	}
	for i, r := range refs {
		checkTargetRef(p.Child("targetRefs").Index(i), r, e)
	}
}

func checkTargetRef(p *field.Path, r *typev1beta1.PolicyTargetReference, e *errorList) {
	if r.Kind == "" {
		e.add(p.Child("kind"), "kind is required")
	}
	if r.Name == "" {
		e.add(p.Child("name"), "name is required")
	}
	if r.Namespace != "" {
		e.add(p.Child("namespace"), "cross namespace referencing is not supported")
	}
}

func validatePeerAuthentication(m proto.Message, _ objectMeta, e *errorList) {
	pa := m.(*security.PeerAuthentication)
	p := field.NewPath("spec")
	checkPolicyTarget(p, pa.Selector, nil, nil, e)
	if len(pa.PortLevelMtls) > 0 && (pa.Selector == nil || len(pa.Selector.MatchLabels) == 0) {
		e.add(p.Child("portLevelMtls"), "portLevelMtls requires a selector with matchLabels")
	}
	for port, mtls := range pa.PortLevelMtls {
		kp := p.Child("portLevelMtls").Key(strconv.FormatUint(uint64(port), 10))
		checkPort(kp, port, e)
		if mtls == nil {
			e.add(kp, "mode settings are required")
		}
	}
}

func validateRequestAuthentication(m proto.Message, _ objectMeta, e *errorList) {
	ra := m.(*security.RequestAuthentication)
	p := field.NewPath("spec")
	checkPolicyTarget(p, ra.Selector, ra.TargetRef, ra.TargetRefs, e)
	for i, r := range ra.JwtRules {
		rp := p.Child("jwtRules").Index(i)
		if r.Issuer == "" {
			e.add(rp.Child("issuer"), "issuer is required")
		}
		for j, a := range r.Audiences {
			if a == "" {
				e.add(rp.Child("audiences").Index(j), "audience must not be empty")
			}
		}
		if r.JwksUri != "" && r.Jwks != "" {
			e.add(rp, "only one of jwks and jwksUri may be set")
		}
		if r.JwksUri != "" {
			u, err := url.Parse(r.JwksUri)
			switch {
			case err != nil:
				e.add(rp.Child("jwksUri"), "invalid URL %q: %v", r.JwksUri, err)
			case u.Scheme != "http" && u.Scheme != "https":
				e.add(rp.Child("jwksUri"), "URL %q must use http or https", r.JwksUri)
			case u.Hostname() == "":
				e.add(rp.Child("jwksUri"), "URL %q has no host", r.JwksUri)
			}
		}
		if r.Jwks != "" {
			var set jose.JSONWebKeySet
			if err := json.Unmarshal([]byte(r.Jwks), &set); err != nil {
				e.add(rp.Child("jwks"), "not a valid JSON Web Key Set: %v", err)
			} else if len(set.Keys) == 0 {
				e.add(rp.Child("jwks"), "the JSON Web Key Set has no keys")
			}
		}
		for j, h := range r.FromHeaders {
			checkHeaderName(rp.Child("fromHeaders").Index(j).Child("name"), strings.ToLower(h.Name), e)
		}
		for j, q := range r.FromParams {
			if q == "" {
				e.add(rp.Child("fromParams").Index(j), "query parameter name must not be empty")
			}
		}
		for j, c := range r.OutputClaimToHeaders {
			cp := rp.Child("outputClaimToHeaders").Index(j)
			checkHeaderName(cp.Child("header"), strings.ToLower(c.Header), e)
			if c.Claim == "" {
				e.add(cp.Child("claim"), "claim is required")
			}
		}
		if r.OutputPayloadToHeader != "" {
			checkHeaderName(rp.Child("outputPayloadToHeader"), strings.ToLower(r.OutputPayloadToHeader), e)
		}
	}
}

func validateAuthorizationPolicy(m proto.Message, _ objectMeta, e *errorList) {
	ap := m.(*security.AuthorizationPolicy)
	p := field.NewPath("spec")
	checkPolicyTarget(p, ap.Selector, ap.TargetRef, ap.TargetRefs, e)
	switch ap.Action {
	case security.AuthorizationPolicy_CUSTOM:
		if ap.GetProvider() == nil || ap.GetProvider().Name == "" {
			e.add(p.Child("provider", "name"), "action CUSTOM requires a provider name")
		}
	case security.AuthorizationPolicy_DENY:
		if len(ap.Rules) == 0 {
			e.add(p.Child("rules"), "action DENY requires at least one rule (a DENY policy without rules matches nothing)")
		}
	}
	if ap.Action != security.AuthorizationPolicy_CUSTOM && ap.GetProvider() != nil {
		e.add(p.Child("provider"), "provider is only allowed with action CUSTOM")
	}
	for i, r := range ap.Rules {
		rp := p.Child("rules").Index(i)
		if r == nil {
			e.add(rp, "a rule must not be null")
			continue
		}
		for j, f := range r.From {
			fp := rp.Child("from").Index(j)
			if f.Source == nil {
				e.add(fp.Child("source"), "source is required")
				continue
			}
			checkSource(fp.Child("source"), f.Source, e)
		}
		for j, t := range r.To {
			tp := rp.Child("to").Index(j)
			if t.Operation == nil {
				e.add(tp.Child("operation"), "operation is required")
				continue
			}
			checkOperation(tp.Child("operation"), t.Operation, e)
		}
		for j, c := range r.When {
			checkCondition(rp.Child("when").Index(j), c, e)
		}
	}
}

func checkSource(p *field.Path, s *security.Source, e *errorList) {
	empty := true
	for _, l := range [][]string{s.Principals, s.NotPrincipals, s.RequestPrincipals, s.NotRequestPrincipals,
		s.Namespaces, s.NotNamespaces, s.ServiceAccounts, s.NotServiceAccounts, s.IpBlocks, s.NotIpBlocks,
		s.RemoteIpBlocks, s.NotRemoteIpBlocks} {
		if len(l) > 0 {
			empty = false
		}
	}
	if empty {
		e.add(p, "source must set at least one field")
	}
	if (len(s.ServiceAccounts) > 0 || len(s.NotServiceAccounts) > 0) && (len(s.Principals) > 0 || len(s.NotPrincipals) > 0 || len(s.Namespaces) > 0 || len(s.NotNamespaces) > 0) {
		e.add(p, "serviceAccounts cannot be combined with principals or namespaces")
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals}} {
		for i, v := range l.vals {
			ip := p.Child(l.name).Index(i)
			if strings.HasPrefix(v, "spiffe://") {
				e.add(ip, "principal %q must not start with spiffe:// (write <trust-domain>/ns/<namespace>/sa/<service-account>)", v)
				continue
			}
			checkWildcardValue(ip, v, e)
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
		{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces}} {
		for i, v := range l.vals {
			checkWildcardValue(p.Child(l.name).Index(i), v, e)
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts}} {
		for i, v := range l.vals {
			ns, sa, ok := strings.Cut(v, "/")
			if !ok || ns == "" || sa == "" || strings.Contains(v, "*") {
				e.add(p.Child(l.name).Index(i), "service account %q must have the form namespace/name, without wildcards", v)
			}
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks}, {"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks}} {
		for i, v := range l.vals {
			checkIPOrCIDR(p.Child(l.name).Index(i), v, e)
		}
	}
}

// checkWildcardValue checks a value matched exactly, by prefix ("abc*"),
// by suffix ("*abc") or as presence ("*").
func checkWildcardValue(p *field.Path, v string, e *errorList) {
	if v == "" {
		e.add(p, "value must not be empty")
		return
	}
	if v == "*" {
		return
	}
	if strings.Contains(strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*"), "*") ||
		(strings.HasPrefix(v, "*") && strings.HasSuffix(v, "*")) {
		e.add(p, "%q: a wildcard is only allowed as a prefix or a suffix, or \"*\" alone", v)
	}
}

func checkOperation(p *field.Path, o *security.Operation, e *errorList) {
	if len(o.Hosts)+len(o.NotHosts)+len(o.Ports)+len(o.NotPorts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0 {
		e.add(p, "operation must set at least one field")
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"hosts", o.Hosts}, {"notHosts", o.NotHosts}, {"methods", o.Methods}, {"notMethods", o.NotMethods}} {
		for i, v := range l.vals {
			checkWildcardValue(p.Child(l.name).Index(i), v, e)
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"ports", o.Ports}, {"notPorts", o.NotPorts}} {
		for i, v := range l.vals {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < 1 || n > 65535 {
				e.add(p.Child(l.name).Index(i), "port %q must be a number between 1 and 65535", v)
			}
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"paths", o.Paths}, {"notPaths", o.NotPaths}} {
		for i, v := range l.vals {
			ip := p.Child(l.name).Index(i)
			if strings.Contains(v, "{") {
				// URI templates ({*}, {**}) are checked by their own grammar.
				checkPathTemplate(ip, v, e)
				continue
			}
			checkWildcardValue(ip, v, e)
		}
	}
}

// checkPathTemplate checks a path with "{*}" (one segment) and "{**}"
// (the rest, only last) operators.
func checkPathTemplate(p *field.Path, v string, e *errorList) {
	if !strings.HasPrefix(v, "/") {
		e.add(p, "path template %q must start with /", v)
		return
	}
	segs := strings.Split(v[1:], "/")
	for i, s := range segs {
		switch {
		case s == "{*}":
		case s == "{**}":
			if i != len(segs)-1 {
				e.add(p, "path template %q: {**} must be the last segment", v)
				return
			}
		case strings.ContainsAny(s, "{}"):
			e.add(p, "path template %q: a segment with an operator must be exactly {*} or {**}", v)
			return
		}
	}
}

// conditionKeys are the attribute keys of AuthorizationPolicy conditions;
// a key ending in "[" takes a name in brackets.
var conditionKeys = []string{
	"request.headers[", "source.ip", "remote.ip", "source.namespace", "source.principal",
	"source.serviceAccount", "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
	"request.auth.claims[", "destination.ip", "destination.port", "connection.sni", "experimental.envoy.filters.",
}

func checkCondition(p *field.Path, c *security.Condition, e *errorList) {
	if c.Key == "" {
		e.add(p.Child("key"), "key is required")
		return
	}
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		e.add(p, "one of values or notValues is required")
	}
	known := false
	for _, k := range conditionKeys {
		if strings.HasSuffix(k, "[") || strings.HasSuffix(k, ".") {
			if strings.HasPrefix(c.Key, k) {
				known = true
				if strings.HasSuffix(k, "[") && (!strings.HasSuffix(c.Key, "]") || len(c.Key) == len(k)+1) {
					e.add(p.Child("key"), "key %q must have the form %sNAME]", c.Key, k)
				}
			}
		} else if c.Key == k {
			known = true
		}
	}
	if !known {
		e.add(p.Child("key"), "unknown key %q", c.Key)
		return
	}
	all := append(append([]string{}, c.Values...), c.NotValues...)
	for i, v := range all {
		vp := p.Child("values").Index(i)
		if i >= len(c.Values) {
			vp = p.Child("notValues").Index(i - len(c.Values))
		}
		switch c.Key {
		case "source.ip", "remote.ip", "destination.ip":
			checkIPOrCIDR(vp, v, e)
		case "destination.port":
			if n, err := strconv.ParseUint(v, 10, 32); err != nil || n < 1 || n > 65535 {
				e.add(vp, "port %q must be a number between 1 and 65535", v)
			}
		}
	}
}
