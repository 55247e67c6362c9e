package rbac

import (
	"net/http"
	"net/netip"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func exact(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
}
func prefix(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: s}}
}
func anyPerm() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func anyPrincipal() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func principalName(m *matcher.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}
func pathPerm(m *matcher.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: m}}}}
}
func methodPerm(m string) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &route.HeaderMatcher{Name: ":method",
		HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact(m)}}}}
}
func pol(perms []*rbacv3.Permission, ps []*rbacv3.Principal) *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: perms, Principals: ps}
}
func rules(action rbacv3.RBAC_Action, p *rbacv3.Policy) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{"ns[default]-policy[p]-rule[0]": p}}
}

func TestEvaluate(t *testing.T) {
	sleep := "spiffe://cluster.local/ns/default/sa/sleep"
	other := "spiffe://cluster.local/ns/other/sa/x"
	base := func() *Request {
		return &Request{Principal: sleep, DirectRemoteIP: netip.MustParseAddr("10.0.0.5"), DestinationIP: netip.MustParseAddr("10.0.0.9"),
			DestinationPort: 8080, Method: "GET", Path: "/api/v1", Host: "svc", Headers: http.Header{"X-Team": {"blue"}}}
	}
	cases := []struct {
		name   string
		rules  *rbacv3.RBAC
		mutate func(*Request)
		allow  bool
	}{
		{"allow principal", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{principalName(exact(sleep))})), nil, true},
		{"allow principal, other peer", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{principalName(exact(sleep))})), func(r *Request) { r.Principal = other }, false},
		{"allow principal, no mTLS", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{principalName(exact(sleep))})), func(r *Request) { r.Principal = "" }, false},
		{"namespace by principal regex", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{principalName(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".*/ns/default/.*"}}})})), nil, true},
		{"namespace by principal regex, other ns", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{principalName(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".*/ns/default/.*"}}})})), func(r *Request) { r.Principal = other }, false},
		{"deny path prefix", rules(rbacv3.RBAC_DENY, pol([]*rbacv3.Permission{pathPerm(prefix("/api"))}, []*rbacv3.Principal{anyPrincipal()})), nil, false},
		{"deny path prefix, other path", rules(rbacv3.RBAC_DENY, pol([]*rbacv3.Permission{pathPerm(prefix("/api"))}, []*rbacv3.Principal{anyPrincipal()})), func(r *Request) { r.Path = "/health" }, true},
		{"allow method", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{methodPerm("GET")}, []*rbacv3.Principal{anyPrincipal()})), nil, true},
		{"allow method, POST", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{methodPerm("GET")}, []*rbacv3.Principal{anyPrincipal()})), func(r *Request) { r.Method = "POST" }, false},
		{"header principal", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Header{Header: &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("blue")}}}}})), nil, true},
		{"header principal, missing", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Header{Header: &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("blue")}}}}})), func(r *Request) { r.Headers = http.Header{} }, false},
		{"ip block", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &core.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(24)}}}})), nil, true},
		{"ip block, outside", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &core.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(24)}}}})), func(r *Request) { r.DirectRemoteIP = netip.MustParseAddr("10.1.0.1") }, false},
		{"remote ip from xff", rules(rbacv3.RBAC_DENY, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &core.CidrRange{AddressPrefix: "192.168.1.1"}}}})), func(r *Request) { r.RemoteIP = netip.MustParseAddr("192.168.1.1") }, false},
		{"destination port and not_rule", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}},
			{Rule: &rbacv3.Permission_NotRule{NotRule: pathPerm(exact("/admin"))}}}}}}}, []*rbacv3.Principal{anyPrincipal()})), nil, true},
		{"destination port and not_rule, admin", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}},
			{Rule: &rbacv3.Permission_NotRule{NotRule: pathPerm(exact("/admin"))}}}}}}}, []*rbacv3.Principal{anyPrincipal()})), func(r *Request) { r.Path = "/admin" }, false},
		{"request.auth.principal", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcher.MetadataMatcher{
			Filter: MetadataNamespace, Path: []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "request.auth.principal"}}},
			Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact("https://issuer/alice")}}}}}})),
			func(r *Request) { r.Metadata = map[string]any{"request.auth.principal": "https://issuer/alice"} }, true},
		{"request.auth.claims[groups]", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcher.MetadataMatcher{
			Filter: MetadataNamespace, Path: []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "request.auth.claims"}}, {Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "groups"}}},
			Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{MatchPattern: &matcher.ListMatcher_OneOf{OneOf: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact("admins")}}}}}}}}}})),
			func(r *Request) {
				r.Metadata = map[string]any{"request.auth.claims": map[string]any{"groups": []any{"dev", "admins"}}}
			}, true},
		{"request.auth.principal absent", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcher.MetadataMatcher{
			Filter: MetadataNamespace, Path: []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "request.auth.principal"}}},
			Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact("https://issuer/alice")}}}}}})), nil, false},
		{"allow with no policies denies", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}, nil, false},
		{"deny with no policies allows", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}, nil, true},
		{"or_ids and not_id", rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			principalName(exact(other)), {Identifier: &rbacv3.Principal_NotId{NotId: principalName(exact(other))}}}}}}})), nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := Compile(c.rules, nil, HTTP)
			if err != nil {
				t.Fatal(err)
			}
			r := base()
			if c.mutate != nil {
				c.mutate(r)
			}
			if got := e.Evaluate(r); got.Allowed != c.allow {
				t.Fatalf("allowed = %v, want %v (policy %q)", got.Allowed, c.allow, got.Policy)
			}
		})
	}
}

func TestShadowRulesDoNotEnforce(t *testing.T) {
	e, err := Compile(nil, rules(rbacv3.RBAC_DENY, pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{anyPrincipal()})), HTTP)
	if err != nil {
		t.Fatal(err)
	}
	d := e.Evaluate(&Request{})
	if !d.Allowed || d.ShadowAllowed || !d.HasShadow {
		t.Fatalf("got %+v", d)
	}
}

func TestNetworkPoliciesRejectHTTPFields(t *testing.T) {
	_, err := Compile(rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{pathPerm(exact("/"))}, []*rbacv3.Principal{anyPrincipal()})), nil, Network)
	if err == nil {
		t.Fatal("url_path accepted in a network policy")
	}
	_, err = Compile(rules(rbacv3.RBAC_ALLOW, pol([]*rbacv3.Permission{{Rule: &rbacv3.Permission_RequestedServerName{}}}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_FilterState{}}})), nil, HTTP)
	if err == nil {
		t.Fatal("unsupported fields were accepted")
	}
}
