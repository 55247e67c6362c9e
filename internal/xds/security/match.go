package security

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// AuthnFilterMetadata is the dynamic metadata namespace in which the proxy
// publishes what it verified of the request's JWT (docs/xds.md): keys
// "request.auth.principal" (issuer "/" subject), "request.auth.audiences",
// "request.auth.presenter" and "request.auth.claims" (a struct of the
// payload's claims).
const AuthnFilterMetadata = "istio_authn"

// Authn metadata keys.
const (
	AuthnPrincipal = "request.auth.principal"
	AuthnAudiences = "request.auth.audiences"
	AuthnPresenter = "request.auth.presenter"
	AuthnClaims    = "request.auth.claims"
)

// stringMatch turns one Istio match value into a StringMatcher: "*" matches
// any non-empty value, "abc*" is a prefix, "*abc" a suffix, anything else
// exact. prefix is prepended to prefix and exact matches ("spiffe://" for
// principals).
func stringMatch(v, prefix string, ignoreCase bool) *matcher.StringMatcher {
	m := &matcher.StringMatcher{IgnoreCase: ignoreCase}
	switch {
	case v == "*":
		m.MatchPattern = &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".+"}}
		m.IgnoreCase = false
	case strings.HasSuffix(v, "*"):
		m.MatchPattern = &matcher.StringMatcher_Prefix{Prefix: prefix + strings.TrimSuffix(v, "*")}
	case strings.HasPrefix(v, "*"):
		m.MatchPattern = &matcher.StringMatcher_Suffix{Suffix: strings.TrimPrefix(v, "*")}
	default:
		m.MatchPattern = &matcher.StringMatcher_Exact{Exact: prefix + v}
	}
	return m
}

// globRegex turns an Istio value with an optional leading or trailing "*"
// into an RE2 fragment.
func globRegex(v string) string {
	if v == "*" {
		return ".*"
	}
	lead, trail := strings.HasPrefix(v, "*"), strings.HasSuffix(v, "*")
	v = strings.TrimSuffix(strings.TrimPrefix(v, "*"), "*")
	r := regexp.QuoteMeta(v)
	if lead {
		r = ".*" + r
	}
	if trail {
		r += ".*"
	}
	return r
}

func regexMatch(re string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: re}}}
}

// validHeaderName accepts an HTTP/2 (lowercase) token or a pseudo-header.
func validHeaderName(name string) bool {
	name = strings.TrimPrefix(name, ":")
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

func headerMatch(name, v string, ignoreCase bool) (*route.HeaderMatcher, error) {
	name = strings.ToLower(name)
	if !validHeaderName(name) {
		return nil, fmt.Errorf("invalid header name %q", name)
	}
	if v == "*" {
		return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}, nil
	}
	return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: stringMatch(v, "", ignoreCase)}}, nil
}

// cidr parses "10.0.0.0/8" or a bare address (a /32 or /128).
func cidr(v string) (*core.CidrRange, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return &core.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return nil, fmt.Errorf("invalid IP address or CIDR %q", v)
	}
	return &core.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}, nil
}

func port(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q", v)
	}
	return uint32(n), nil
}

// pathMatch matches the request path without the query string: "*"
// anything, "/a*" prefix, "*.png" suffix, path templates with "{*}" (one
// segment) and "{**}" (any rest) as a regex, else exact.
func pathMatch(v string) (*matcher.PathMatcher, error) {
	if v == "" {
		return nil, fmt.Errorf("empty path")
	}
	if strings.Contains(v, "{") {
		segs := strings.Split(v, "/")
		for i, s := range segs {
			switch {
			case s == "{*}":
				segs[i] = "[^/]+"
			case s == "{**}" && i == len(segs)-1:
				segs[i] = ".+"
			case strings.ContainsAny(s, "{}"):
				return nil, fmt.Errorf("invalid path template %q", v)
			default:
				segs[i] = regexp.QuoteMeta(s)
			}
		}
		return &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: regexMatch(strings.Join(segs, "/"))}}, nil
	}
	return &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: stringMatch(v, "", false)}}, nil
}

// authnMetadata matches a key of the istio_authn metadata; path holds the
// nested keys after the first (claims).
func authnMetadata(key string, path []string, v *matcher.ValueMatcher) *matcher.MetadataMatcher {
	segs := []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: key}}}
	for _, p := range path {
		segs = append(segs, &matcher.MetadataMatcher_PathSegment{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: p}})
	}
	return &matcher.MetadataMatcher{Filter: AuthnFilterMetadata, Path: segs, Value: v}
}

func stringValue(v string) *matcher.ValueMatcher {
	return &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: stringMatch(v, "", false)}}
}

// listValue matches when any element of a list value matches v (claims and
// audiences may be lists; a single string is treated as a one-element list
// by the proxy, as Envoy does).
func listValue(v string) *matcher.ValueMatcher {
	return &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{
		MatchPattern: &matcher.ListMatcher_OneOf{OneOf: stringValue(v)},
	}}}
}

// Principal and permission combinators that keep the tree flat and never
// build an empty set (which would not validate).

func anyID() *rbac.Principal { return &rbac.Principal{Identifier: &rbac.Principal_Any{Any: true}} }

func anyRule() *rbac.Permission { return &rbac.Permission{Rule: &rbac.Permission_Any{Any: true}} }

func orIDs(ids []*rbac.Principal) *rbac.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: ids}}}
}

func andIDs(ids []*rbac.Principal) *rbac.Principal {
	switch len(ids) {
	case 0:
		return anyID()
	case 1:
		return ids[0]
	}
	return &rbac.Principal{Identifier: &rbac.Principal_AndIds{AndIds: &rbac.Principal_Set{Ids: ids}}}
}

func notID(p *rbac.Principal) *rbac.Principal {
	return &rbac.Principal{Identifier: &rbac.Principal_NotId{NotId: p}}
}

func orRules(rules []*rbac.Permission) *rbac.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbac.Permission{Rule: &rbac.Permission_OrRules{OrRules: &rbac.Permission_Set{Rules: rules}}}
}

func andRules(rules []*rbac.Permission) *rbac.Permission {
	switch len(rules) {
	case 0:
		return anyRule()
	case 1:
		return rules[0]
	}
	return &rbac.Permission{Rule: &rbac.Permission_AndRules{AndRules: &rbac.Permission_Set{Rules: rules}}}
}

func notRule(p *rbac.Permission) *rbac.Permission {
	return &rbac.Permission{Rule: &rbac.Permission_NotRule{NotRule: p}}
}

func principalName(m *matcher.StringMatcher) *rbac.Principal {
	return &rbac.Principal{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{PrincipalName: m}}}
}
