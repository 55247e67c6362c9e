package security

import (
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

const (
	allowAction = securityv1beta1.AuthorizationPolicy_ALLOW
	denyAction  = securityv1beta1.AuthorizationPolicy_DENY
	auditAction = securityv1beta1.AuthorizationPolicy_AUDIT
)

// ap builds an AuthorizationPolicy from its spec in YAML (the CRD's
// field names).
func ap(t testing.TB, ns, name string, age int, specYAML string) model.Config[*securityv1beta1.AuthorizationPolicy] {
	t.Helper()
	spec := &securityv1beta1.AuthorizationPolicy{}
	j, err := yaml.YAMLToJSON([]byte(specYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.UnmarshalJSON(j); err != nil {
		t.Fatalf("bad policy: %v", err)
	}
	return model.Config[*securityv1beta1.AuthorizationPolicy]{Meta: meta(model.KindAuthorizationPolicy, ns, name, age), Spec: spec}
}

// httpRBAC unpacks the rbac filters of an HTTP filter list.
func httpRBAC(t testing.TB, filters []*hcm.HttpFilter) []*rbachttp.RBAC {
	t.Helper()
	var out []*rbachttp.RBAC
	for _, f := range filters {
		mustValidate(t, f)
		if f.GetName() != HTTPRBACFilter {
			continue
		}
		r := &rbachttp.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
			t.Fatal(err)
		}
		mustValidate(t, r)
		out = append(out, r)
	}
	return out
}

func netRBAC(t testing.TB, filters []*listener.Filter) []*rbacnet.RBAC {
	t.Helper()
	var out []*rbacnet.RBAC
	for _, f := range filters {
		mustValidate(t, f)
		if f.GetName() != NetworkRBACFilter {
			t.Fatalf("unexpected network filter %s", f.GetName())
		}
		r := &rbacnet.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
			t.Fatal(err)
		}
		mustValidate(t, r)
		if r.GetStatPrefix() == "" {
			t.Error("network rbac without stat_prefix")
		}
		out = append(out, r)
	}
	return out
}

// onlyPolicy returns the single policy of a single-rule config.
func onlyPolicy(t testing.TB, r *rbac.RBAC) *rbac.Policy {
	t.Helper()
	if len(r.GetPolicies()) != 1 {
		t.Fatalf("%d policies, want 1: %v", len(r.GetPolicies()), r)
	}
	for _, p := range r.GetPolicies() {
		return p
	}
	return nil
}

// TestRuleTranslation maps every source, operation and condition kind of
// a rule to its Envoy principal or permission.
func TestRuleTranslation(t *testing.T) {
	tests := []struct {
		name string
		rule string // one rule, YAML
		want string // the Envoy policy, YAML
	}{
		{"empty rule matches everything", `{}`, `{permissions: [{any: true}], principals: [{any: true}]}`},
		{"principal exact gets spiffe prefix", `from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}]`,
			`{permissions: [{any: true}], principals: [{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/a/sa/b"}}}]}`},
		{"principal any authenticated", `from: [{source: {principals: ["*"]}}]`,
			`{permissions: [{any: true}], principals: [{authenticated: {principalName: {safeRegex: {regex: ".+"}}}}]}`},
		{"principal prefix and suffix", `from: [{source: {principals: ["cluster.local/ns/a/*", "*/sa/b"]}}]`,
			`{permissions: [{any: true}], principals: [{orIds: {ids: [
			   {authenticated: {principalName: {prefix: "spiffe://cluster.local/ns/a/"}}},
			   {authenticated: {principalName: {suffix: "/sa/b"}}}]}}]}`},
		{"notPrincipals", `from: [{source: {notPrincipals: ["cluster.local/ns/a/sa/b"]}}]`,
			`{permissions: [{any: true}], principals: [{notId: {authenticated: {principalName: {exact: "spiffe://cluster.local/ns/a/sa/b"}}}}]}`},
		{"namespaces", `from: [{source: {namespaces: ["bookinfo"]}}]`,
			`{permissions: [{any: true}], principals: [{authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/bookinfo/sa/.*"}}}}]}`},
		{"notNamespaces with wildcard", `from: [{source: {notNamespaces: ["test-*"]}}]`,
			`{permissions: [{any: true}], principals: [{notId: {authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/test-.*/sa/.*"}}}}}]}`},
		{"serviceAccounts", `from: [{source: {serviceAccounts: ["bookinfo/reviews"]}}]`,
			`{permissions: [{any: true}], principals: [{authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/bookinfo/sa/reviews"}}}}]}`},
		{"trustDomains", `from: [{source: {trustDomains: ["td.example"]}}]`,
			`{permissions: [{any: true}], principals: [{authenticated: {principalName: {safeRegex: {regex: "spiffe://td\\.example/.*"}}}}]}`},
		{"ipBlocks cidr and address", `from: [{source: {ipBlocks: ["10.0.0.0/8", "192.168.1.7", "fd00::/64"]}}]`,
			`{permissions: [{any: true}], principals: [{orIds: {ids: [
			   {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}},
			   {directRemoteIp: {addressPrefix: 192.168.1.7, prefixLen: 32}},
			   {directRemoteIp: {addressPrefix: "fd00::", prefixLen: 64}}]}}]}`},
		{"notIpBlocks", `from: [{source: {notIpBlocks: ["10.0.0.0/8"]}}]`,
			`{permissions: [{any: true}], principals: [{notId: {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}}]}`},
		{"remoteIpBlocks and not", `from: [{source: {remoteIpBlocks: ["1.2.3.0/24"], notRemoteIpBlocks: ["1.2.3.4"]}}]`,
			`{permissions: [{any: true}], principals: [{andIds: {ids: [
			   {remoteIp: {addressPrefix: 1.2.3.0, prefixLen: 24}},
			   {notId: {remoteIp: {addressPrefix: 1.2.3.4, prefixLen: 32}}}]}}]}`},
		{"requestPrincipals", `from: [{source: {requestPrincipals: ["https://issuer/user1", "*"]}}]`,
			`{permissions: [{any: true}], principals: [{orIds: {ids: [
			   {metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {stringMatch: {exact: "https://issuer/user1"}}}},
			   {metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {stringMatch: {safeRegex: {regex: ".+"}}}}}]}}]}`},
		{"notRequestPrincipals", `from: [{source: {notRequestPrincipals: ["*"]}}]`,
			`{permissions: [{any: true}], principals: [{notId:
			   {metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {stringMatch: {safeRegex: {regex: ".+"}}}}}}]}`},
		{"two sources are alternatives", `from: [{source: {namespaces: ["a"]}}, {source: {ipBlocks: ["10.0.0.1"]}}]`,
			`{permissions: [{any: true}], principals: [{orIds: {ids: [
			   {authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/a/sa/.*"}}}},
			   {directRemoteIp: {addressPrefix: 10.0.0.1, prefixLen: 32}}]}}]}`},
		{"fields of one source are all required", `from: [{source: {namespaces: ["a"], principals: ["cluster.local/ns/a/sa/x"]}}]`,
			`{permissions: [{any: true}], principals: [{andIds: {ids: [
			   {authenticated: {principalName: {exact: "spiffe://cluster.local/ns/a/sa/x"}}},
			   {authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/a/sa/.*"}}}}]}}]}`},
		{"hosts ignore case", `to: [{operation: {hosts: ["www.example.com", "*.example.com"]}}]`,
			`{principals: [{any: true}], permissions: [{orRules: {rules: [
			   {header: {name: ":authority", stringMatch: {exact: www.example.com, ignoreCase: true}}},
			   {header: {name: ":authority", stringMatch: {suffix: .example.com, ignoreCase: true}}}]}}]}`},
		{"notHosts", `to: [{operation: {notHosts: ["admin.example.com"]}}]`,
			`{principals: [{any: true}], permissions: [{notRule:
			   {header: {name: ":authority", stringMatch: {exact: admin.example.com, ignoreCase: true}}}}]}`},
		{"ports", `to: [{operation: {ports: ["8080", "9090"]}}]`,
			`{principals: [{any: true}], permissions: [{orRules: {rules: [{destinationPort: 8080}, {destinationPort: 9090}]}}]}`},
		{"notPorts", `to: [{operation: {notPorts: ["15000"]}}]`,
			`{principals: [{any: true}], permissions: [{notRule: {destinationPort: 15000}}]}`},
		{"methods", `to: [{operation: {methods: ["GET", "HEAD"]}}]`,
			`{principals: [{any: true}], permissions: [{orRules: {rules: [
			   {header: {name: ":method", stringMatch: {exact: GET}}}, {header: {name: ":method", stringMatch: {exact: HEAD}}}]}}]}`},
		{"notMethods", `to: [{operation: {notMethods: ["DELETE"]}}]`,
			`{principals: [{any: true}], permissions: [{notRule: {header: {name: ":method", stringMatch: {exact: DELETE}}}}]}`},
		{"paths exact prefix suffix any", `to: [{operation: {paths: ["/healthz", "/api/*", "*.png", "*"]}}]`,
			`{principals: [{any: true}], permissions: [{orRules: {rules: [
			   {urlPath: {path: {exact: /healthz}}}, {urlPath: {path: {prefix: /api/}}},
			   {urlPath: {path: {suffix: .png}}}, {urlPath: {path: {safeRegex: {regex: ".+"}}}}]}}]}`},
		{"path templates", `to: [{operation: {paths: ["/users/{*}/info", "/files/{**}"]}}]`,
			`{principals: [{any: true}], permissions: [{orRules: {rules: [
			   {urlPath: {path: {safeRegex: {regex: "/users/[^/]+/info"}}}}, {urlPath: {path: {safeRegex: {regex: "/files/.+"}}}}]}}]}`},
		{"notPaths", `to: [{operation: {notPaths: ["/admin*"]}}]`,
			`{principals: [{any: true}], permissions: [{notRule: {urlPath: {path: {prefix: /admin}}}}]}`},
		{"fields of one operation are all required", `to: [{operation: {methods: ["GET"], paths: ["/a"]}}]`,
			`{principals: [{any: true}], permissions: [{andRules: {rules: [
			   {header: {name: ":method", stringMatch: {exact: GET}}}, {urlPath: {path: {exact: /a}}}]}}]}`},
		{"when request header", `when: [{key: "request.headers[X-Token]", values: ["abc", "*"]}]`,
			`{permissions: [{any: true}], principals: [{orIds: {ids: [
			   {header: {name: x-token, stringMatch: {exact: abc}}}, {header: {name: x-token, presentMatch: true}}]}}]}`},
		{"when source.ip and notValues", `when: [{key: source.ip, values: ["10.0.0.0/8"], notValues: ["10.0.0.1"]}]`,
			`{permissions: [{any: true}], principals: [{andIds: {ids: [
			   {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}, {notId: {directRemoteIp: {addressPrefix: 10.0.0.1, prefixLen: 32}}}]}}]}`},
		{"when remote.ip", `when: [{key: remote.ip, values: ["1.1.1.1"]}]`,
			`{permissions: [{any: true}], principals: [{remoteIp: {addressPrefix: 1.1.1.1, prefixLen: 32}}]}`},
		{"when source.namespace", `when: [{key: source.namespace, notValues: ["kube-system"]}]`,
			`{permissions: [{any: true}], principals: [{notId: {authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/kube-system/sa/.*"}}}}}]}`},
		{"when source.principal", `when: [{key: source.principal, values: ["cluster.local/ns/a/sa/b"]}]`,
			`{permissions: [{any: true}], principals: [{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/a/sa/b"}}}]}`},
		{"when request.auth.principal", `when: [{key: request.auth.principal, values: ["iss/sub"]}]`,
			`{permissions: [{any: true}], principals: [{metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {stringMatch: {exact: iss/sub}}}}]}`},
		{"when request.auth.audiences", `when: [{key: request.auth.audiences, values: ["api"]}]`,
			`{permissions: [{any: true}], principals: [{metadata: {filter: istio_authn, path: [{key: request.auth.audiences}], value: {orMatch: {valueMatchers: [
			   {stringMatch: {exact: api}}, {listMatch: {oneOf: {stringMatch: {exact: api}}}}]}}}}]}`},
		{"when request.auth.presenter", `when: [{key: request.auth.presenter, values: ["client"]}]`,
			`{permissions: [{any: true}], principals: [{metadata: {filter: istio_authn, path: [{key: request.auth.presenter}], value: {stringMatch: {exact: client}}}}]}`},
		{"when nested claim", `when: [{key: "request.auth.claims[realm][role]", values: ["admin"]}]`,
			`{permissions: [{any: true}], principals: [{metadata: {filter: istio_authn, path: [{key: request.auth.claims}, {key: realm}, {key: role}], value: {orMatch: {valueMatchers: [
			   {stringMatch: {exact: admin}}, {listMatch: {oneOf: {stringMatch: {exact: admin}}}}]}}}}]}`},
		{"when destination.port", `when: [{key: destination.port, values: ["9080"]}]`,
			`{principals: [{any: true}], permissions: [{destinationPort: 9080}]}`},
		{"when destination.ip", `when: [{key: destination.ip, notValues: ["10.0.0.9"]}]`,
			`{principals: [{any: true}], permissions: [{notRule: {destinationIp: {addressPrefix: 10.0.0.9, prefixLen: 32}}}]}`},
		{"from to and when are all required", `
from: [{source: {namespaces: ["a"]}}]
to: [{operation: {methods: ["GET"]}}]
when: [{key: destination.port, values: ["80"]}, {key: "request.headers[x-a]", values: ["1"]}]`,
			`permissions: [{andRules: {rules: [{header: {name: ":method", stringMatch: {exact: GET}}}, {destinationPort: 80}]}}]
principals: [{andIds: {ids: [{authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/a/sa/.*"}}}}, {header: {name: x-a, stringMatch: {exact: "1"}}}]}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			rule := "rules:\n- " + strings.ReplaceAll(strings.TrimSpace(tt.rule), "\n", "\n  ")
			push.AuthorizationPolicies = append(push.AuthorizationPolicies, ap(t, "bookinfo", "p", 0, rule))
			filters := InboundHTTPFilters(push, sidecar("bookinfo", nil), 9080)
			rb := httpRBAC(t, filters)
			if len(rb) != 1 || rb[0].GetRules().GetAction() != rbac.RBAC_ALLOW {
				t.Fatalf("want one ALLOW rbac filter, got %v", rb)
			}
			if _, ok := rb[0].GetRules().GetPolicies()[PolicyName("bookinfo", "p", 0)]; !ok {
				t.Errorf("policy not named %s", PolicyName("bookinfo", "p", 0))
			}
			assertJSON(t, onlyPolicy(t, rb[0].GetRules()), tt.want)
			if s := SkippedFor(push, sidecar("bookinfo", nil)); len(s) != 0 {
				t.Errorf("skipped: %v", s)
			}
		})
	}
}

// TestActions checks filter presence, order and the meaning of empty
// policies per action.
func TestActions(t *testing.T) {
	tests := []struct {
		name     string
		policies []string // "action:rules" shorthand: YAML spec
		want     []rbac.RBAC_Action
		shadow   []bool
		policyN  []int
	}{
		{name: "no policy no filter"},
		{name: "allow", policies: []string{`{action: ALLOW, rules: [{}]}`}, want: []rbac.RBAC_Action{rbac.RBAC_ALLOW}, shadow: []bool{false}, policyN: []int{1}},
		{name: "allow without rules denies all", policies: []string{`{}`}, want: []rbac.RBAC_Action{rbac.RBAC_ALLOW}, shadow: []bool{false}, policyN: []int{0}},
		{name: "deny without rules denies nothing", policies: []string{`{action: DENY}`}},
		{name: "audit without rules logs nothing", policies: []string{`{action: AUDIT}`}},
		{name: "deny before allow before audit", policies: []string{`{action: AUDIT, rules: [{}]}`, `{action: ALLOW, rules: [{}, {}]}`, `{action: DENY, rules: [{}]}`},
			want: []rbac.RBAC_Action{rbac.RBAC_DENY, rbac.RBAC_ALLOW, rbac.RBAC_LOG}, shadow: []bool{false, false, true}, policyN: []int{1, 2, 1}},
		{name: "two allow policies share one filter", policies: []string{`{action: ALLOW, rules: [{}]}`, `{rules: [{}]}`},
			want: []rbac.RBAC_Action{rbac.RBAC_ALLOW}, shadow: []bool{false}, policyN: []int{2}},
		{name: "custom is skipped", policies: []string{`{action: CUSTOM, provider: {name: ext}, rules: [{}]}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			for i, p := range tt.policies {
				push.AuthorizationPolicies = append(push.AuthorizationPolicies, ap(t, "bookinfo", "p"+string(rune('a'+i)), i, p))
			}
			proxy := sidecar("bookinfo", nil)
			check := func(kind string, rules, shadows []*rbac.RBAC) {
				if len(rules) != len(tt.want) {
					t.Fatalf("%s: %d rbac filters, want %d", kind, len(rules), len(tt.want))
				}
				for i := range rules {
					r := rules[i]
					if tt.shadow[i] {
						if r != nil {
							t.Errorf("%s filter %d enforces rules", kind, i)
						}
						r = shadows[i]
					}
					if r.GetAction() != tt.want[i] || len(r.GetPolicies()) != tt.policyN[i] {
						t.Errorf("%s filter %d: action %v with %d policies, want %v with %d", kind, i, r.GetAction(), len(r.GetPolicies()), tt.want[i], tt.policyN[i])
					}
				}
			}
			var rules, shadows []*rbac.RBAC
			for _, r := range httpRBAC(t, InboundHTTPFilters(push, proxy, 80)) {
				rules, shadows = append(rules, r.GetRules()), append(shadows, r.GetShadowRules())
			}
			check("http", rules, shadows)
			rules, shadows = nil, nil
			for _, r := range netRBAC(t, InboundNetworkFilters(push, proxy, 80)) {
				rules, shadows = append(rules, r.GetRules()), append(shadows, r.GetShadowRules())
			}
			check("tcp", rules, shadows)
			if strings.Contains(tt.name, "custom") {
				s := SkippedFor(push, proxy)
				if len(s) != 1 || !strings.Contains(s[0].Reason, "CUSTOM") {
					t.Errorf("skipped = %v, want the CUSTOM policy", s)
				}
			}
		})
	}
}

// TestPolicyScope checks which policies apply to a proxy.
func TestPolicyScope(t *testing.T) {
	app := map[string]string{"app": "reviews"}
	tests := []struct {
		name     string
		ns       string
		selector map[string]string
		applies  bool
	}{
		{"same namespace no selector", "bookinfo", nil, true},
		{"same namespace matching selector", "bookinfo", app, true},
		{"same namespace other selector", "bookinfo", map[string]string{"app": "ratings"}, false},
		{"selector needs every label", "bookinfo", map[string]string{"app": "reviews", "version": "v1"}, false},
		{"other namespace", "other", nil, false},
		{"root namespace is mesh-wide", rootNS, nil, true},
		{"root namespace selector matches across namespaces", rootNS, app, true},
		{"root namespace other selector", rootNS, map[string]string{"app": "ratings"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			p := ap(t, tt.ns, "p", 0, `{action: DENY, rules: [{}]}`)
			if tt.selector != nil {
				p.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: tt.selector}
			}
			push.AuthorizationPolicies = append(push.AuthorizationPolicies, p)
			got := len(InboundHTTPFilters(push, sidecar("bookinfo", app), 80)) == 1
			if got != tt.applies {
				t.Errorf("applies = %v, want %v", got, tt.applies)
			}
		})
	}
	t.Run("targetRef is skipped", func(t *testing.T) {
		push := newPush()
		push.AuthorizationPolicies = append(push.AuthorizationPolicies,
			ap(t, "bookinfo", "gw", 0, `{action: DENY, targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}, rules: [{}]}`))
		if f := InboundHTTPFilters(push, sidecar("bookinfo", app), 80); len(f) != 0 {
			t.Errorf("targetRef policy applied to a sidecar: %v", f)
		}
		if s := SkippedFor(push, sidecar("bookinfo", app)); len(s) != 1 || s[0].Name != "gw" {
			t.Errorf("skipped = %v", s)
		}
	})
}

// TestL4 checks how HTTP-only fields are handled on TCP chains.
func TestL4(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   string // YAML of the network RBAC rules
	}{
		{"allow rule with http field matches nothing", `{action: ALLOW, rules: [
		   {from: [{source: {namespaces: [a]}}], to: [{operation: {methods: [GET]}}]},
		   {to: [{operation: {ports: ["5432"]}}]}]}`,
			`{policies: {"ns[bookinfo]-policy[p]-rule[1]": {principals: [{any: true}], permissions: [{destinationPort: 5432}]}}}`},
		{"allow with only http rules denies all tcp", `{action: ALLOW, rules: [{to: [{operation: {paths: [/a]}}]}, {when: [{key: request.auth.principal, values: ["*"]}]}]}`,
			`{}`},
		{"deny drops http fields", `{action: DENY, rules: [
		   {from: [{source: {namespaces: [a], requestPrincipals: ["*"]}}], to: [{operation: {methods: [GET], ports: ["80"]}}]}]}`,
			`{action: DENY, policies: {"ns[bookinfo]-policy[p]-rule[0]": {
			   principals: [{authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/a/sa/.*"}}}}],
			   permissions: [{destinationPort: 80}]}}}`},
		{"deny with only http fields denies all tcp", `{action: DENY, rules: [{to: [{operation: {hosts: [x], notPaths: [/a]}}], when: [{key: "request.headers[a]", values: [b]}]}]}`,
			`{action: DENY, policies: {"ns[bookinfo]-policy[p]-rule[0]": {principals: [{any: true}], permissions: [{any: true}]}}}`},
		{"l4 fields kept", `{action: ALLOW, rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/b"], ipBlocks: ["10.0.0.0/8"]}}],
		   to: [{operation: {notPorts: ["22"]}}], when: [{key: destination.ip, values: ["10.1.1.1"]}, {key: source.namespace, values: [a]}]}]}`,
			`{policies: {"ns[bookinfo]-policy[p]-rule[0]": {
			   principals: [{andIds: {ids: [
			     {andIds: {ids: [{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/a/sa/b"}}}, {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}]}},
			     {authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/a/sa/.*"}}}}]}}],
			   permissions: [{andRules: {rules: [{notRule: {destinationPort: 22}}, {destinationIp: {addressPrefix: 10.1.1.1, prefixLen: 32}}]}}]}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			push.AuthorizationPolicies = append(push.AuthorizationPolicies, ap(t, "bookinfo", "p", 0, tt.policy))
			rb := netRBAC(t, InboundNetworkFilters(push, sidecar("bookinfo", nil), 5432))
			if len(rb) != 1 {
				t.Fatalf("%d network rbac filters, want 1", len(rb))
			}
			assertJSON(t, rb[0].GetRules(), tt.want)
		})
	}
}

// TestInvalidRules checks that untranslatable values fail closed and are
// reported.
func TestInvalidRules(t *testing.T) {
	tests := []struct {
		name, policy string
		want         string // YAML of the HTTP rules
		reason       string
	}{
		{"allow bad ip drops the rule", `{action: ALLOW, rules: [{from: [{source: {ipBlocks: [not-an-ip]}}]}]}`, `{}`, "ipBlocks: invalid IP"},
		{"allow bad port drops the rule", `{action: ALLOW, rules: [{to: [{operation: {ports: ["http"]}}]}]}`, `{}`, `invalid port "http"`},
		{"allow unknown condition drops the rule", `{action: ALLOW, rules: [{when: [{key: connection.sni, values: [a]}]}]}`, `{}`, "not supported"},
		{"condition without values", `{action: ALLOW, rules: [{when: [{key: source.ip}]}]}`, `{}`, "neither values"},
		{"bad header name", `{action: ALLOW, rules: [{when: [{key: "request.headers[a b]", values: [x]}]}]}`, `{}`, "header name"},
		{"bad service account", `{action: ALLOW, rules: [{from: [{source: {serviceAccounts: [nons]}}]}]}`, `{}`, "namespace/name"},
		{"deny bad term denies more", `{action: DENY, rules: [{from: [{source: {namespaces: [a], ipBlocks: [bad]}}]}]}`,
			`{action: DENY, policies: {"ns[bookinfo]-policy[p]-rule[0]": {permissions: [{any: true}], principals: [{authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/a/sa/.*"}}}}]}}}`,
			"denies more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			push.AuthorizationPolicies = append(push.AuthorizationPolicies, ap(t, "bookinfo", "p", 0, tt.policy))
			proxy := sidecar("bookinfo", nil)
			rb := httpRBAC(t, InboundHTTPFilters(push, proxy, 80))
			if len(rb) != 1 {
				t.Fatalf("%d rbac filters", len(rb))
			}
			assertJSON(t, rb[0].GetRules(), tt.want)
			s := SkippedFor(push, proxy)
			if len(s) != 1 || s[0].Kind != string(model.KindAuthorizationPolicy) || s[0].Name != "p" || !strings.Contains(s[0].Reason, tt.reason) {
				t.Errorf("skipped = %+v, want a reason with %q", s, tt.reason)
			}
		})
	}
}
