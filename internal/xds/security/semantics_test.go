package security

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// allowedBy runs a request through the translated rbac filters with the
// proxy's RBAC engine (internal/proxy/dataplane/rbac): the request passes
// when every filter allows it, as it would in the proxy's filter chain.
func allowedBy(t *testing.T, push *model.PushContext, proxy *model.Proxy, http bool, req *rbac.Request) bool {
	t.Helper()
	var engines []*rbac.Engine
	if http {
		for _, r := range httpRBAC(t, InboundHTTPFilters(push, proxy, uint32(req.DestinationPort))) {
			e, err := rbac.Compile(r.GetRules(), r.GetShadowRules(), rbac.HTTP)
			if err != nil {
				t.Fatalf("the proxy rejects the HTTP rbac filter: %v", err)
			}
			engines = append(engines, e)
		}
	} else {
		for _, r := range netRBAC(t, InboundNetworkFilters(push, proxy, uint32(req.DestinationPort))) {
			e, err := rbac.Compile(r.GetRules(), r.GetShadowRules(), rbac.Network)
			if err != nil {
				t.Fatalf("the proxy rejects the network rbac filter: %v", err)
			}
			engines = append(engines, e)
		}
	}
	for _, e := range engines {
		if !e.Evaluate(req).Allowed {
			return false
		}
	}
	return true
}

// request builds an HTTP request to 10.0.0.5:9080 from 10.1.2.3.
func request(principal, method, path string, mods ...func(*rbac.Request)) *rbac.Request {
	r := &rbac.Request{
		Principal: principal, DirectRemoteIP: netip.MustParseAddr("10.1.2.3"), RemoteIP: netip.MustParseAddr("10.1.2.3"),
		DestinationIP: netip.MustParseAddr("10.0.0.5"), DestinationPort: 9080,
		Method: method, Host: "reviews.bookinfo.svc.cluster.local:9080", Scheme: "http", Path: path, RawPath: path,
		Headers: http.Header{},
	}
	for _, m := range mods {
		m(r)
	}
	return r
}

func withJWT(principal string, claims map[string]any) func(*rbac.Request) {
	return func(r *rbac.Request) {
		r.Metadata = map[string]any{AuthnPrincipal: principal, AuthnClaims: claims, AuthnAudiences: []any{"bookinfo"}}
	}
}

func withHeader(k, v string) func(*rbac.Request) {
	return func(r *rbac.Request) { r.Headers.Set(k, v) }
}

func withPort(p uint16) func(*rbac.Request) {
	return func(r *rbac.Request) { r.DestinationPort = p }
}

const (
	productpage = "spiffe://cluster.local/ns/bookinfo/sa/productpage"
	stranger    = "spiffe://cluster.local/ns/other/sa/default"
)

// TestPolicySemantics asserts what users of AuthorizationPolicy observe:
// who gets through the proxy for a set of policies.
func TestPolicySemantics(t *testing.T) {
	type check struct {
		name string
		http bool
		req  *rbac.Request
		want bool
	}
	tests := []struct {
		name     string
		policies []string
		checks   []check
	}{
		{name: "no policy allows everything", checks: []check{
			{"plaintext", true, request("", "DELETE", "/"), true},
			{"tcp", false, request("", "", ""), true},
		}},
		{name: "allow namespace and GET paths", policies: []string{`
rules:
- from: [{source: {namespaces: [bookinfo]}}]
  to: [{operation: {methods: [GET], paths: ["/reviews/*"]}}]`}, checks: []check{
			{"productpage GET", true, request(productpage, "GET", "/reviews/1"), true},
			{"productpage POST", true, request(productpage, "POST", "/reviews/1"), false},
			{"productpage other path", true, request(productpage, "GET", "/admin"), false},
			{"other namespace", true, request(stranger, "GET", "/reviews/1"), false},
			{"plaintext", true, request("", "GET", "/reviews/1"), false},
			{"tcp: the only rule is HTTP-only, nothing allowed", false, request(productpage, "", ""), false},
		}},
		{name: "allow with no rules denies all", policies: []string{`{action: ALLOW}`}, checks: []check{
			{"http", true, request(productpage, "GET", "/"), false},
			{"tcp", false, request(productpage, "", ""), false},
		}},
		{name: "deny beats allow", policies: []string{
			`{action: ALLOW, rules: [{from: [{source: {principals: ["*"]}}]}]}`,
			`{action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}`}, checks: []check{
			{"mTLS peer", true, request(stranger, "GET", "/reviews"), true},
			{"mTLS peer to admin", true, request(stranger, "GET", "/admin/users"), false},
			{"plaintext", true, request("", "GET", "/reviews"), false},
			{"tcp: the deny loses its HTTP fields and denies all", false, request(stranger, "", ""), false},
		}},
		{name: "deny with notValues", policies: []string{`
action: DENY
rules: [{when: [{key: "request.headers[x-tenant]", notValues: [acme]}]}]`}, checks: []check{
			{"acme", true, request("", "GET", "/", withHeader("X-Tenant", "acme")), true},
			{"other tenant", true, request("", "GET", "/", withHeader("X-Tenant", "evil")), false},
			{"no header", true, request("", "GET", "/"), false},
		}},
		{name: "requestPrincipals require a token", policies: []string{`
rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]`}, checks: []check{
			{"no token", true, request(productpage, "GET", "/"), false},
			{"token", true, request(productpage, "GET", "/", withJWT("https://issuer/alice", nil)), true},
		}},
		{name: "claims match strings and lists", policies: []string{`
rules: [{when: [{key: "request.auth.claims[groups]", values: [admins]}, {key: "request.auth.claims[org][name]", values: [acme]}]}]`}, checks: []check{
			{"list claim", true, request("", "GET", "/", withJWT("i/s", map[string]any{"groups": []any{"dev", "admins"}, "org": map[string]any{"name": "acme"}})), true},
			{"string claim", true, request("", "GET", "/", withJWT("i/s", map[string]any{"groups": "admins", "org": map[string]any{"name": "acme"}})), true},
			{"wrong group", true, request("", "GET", "/", withJWT("i/s", map[string]any{"groups": []any{"dev"}, "org": map[string]any{"name": "acme"}})), false},
			{"no token", true, request("", "GET", "/"), false},
		}},
		{name: "ports and ip blocks on tcp", policies: []string{`
rules:
- from: [{source: {ipBlocks: ["10.1.0.0/16"], notIpBlocks: ["10.1.9.9"]}}]
  to: [{operation: {ports: ["5432"]}}]`}, checks: []check{
			{"allowed source and port", false, request("", "", "", withPort(5432)), true},
			{"other port", false, request("", "", "", withPort(5433)), false},
			{"excluded source", false, request("", "", "", withPort(5432), func(r *rbac.Request) { r.DirectRemoteIP = netip.MustParseAddr("10.1.9.9") }), false},
		}},
		{name: "path templates and host case", policies: []string{`
rules: [{to: [{operation: {hosts: ["Reviews.bookinfo.svc.cluster.local:9080"], paths: ["/users/{*}/reviews"]}}]}]`}, checks: []check{
			{"one segment", true, request("", "GET", "/users/42/reviews"), true},
			{"two segments", true, request("", "GET", "/users/4/2/reviews"), false},
		}},
		{name: "audit never blocks", policies: []string{`{action: AUDIT, rules: [{}]}`}, checks: []check{
			{"http", true, request("", "GET", "/"), true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			for i, p := range tt.policies {
				push.AuthorizationPolicies = append(push.AuthorizationPolicies, ap(t, "bookinfo", "p"+string(rune('a'+i)), i, p))
			}
			proxy := sidecar("bookinfo", map[string]string{"app": "reviews"})
			for _, c := range tt.checks {
				if got := allowedBy(t, push, proxy, c.http, c.req); got != c.want {
					t.Errorf("%s: allowed = %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}
