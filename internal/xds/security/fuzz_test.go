package security

import (
	"testing"

	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	proxyrbac "github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// FuzzAuthorizationPolicy feeds arbitrary policies (as the CRD's JSON) to
// the translation: it must never panic, every filter must validate, an
// ALLOW policy always yields an ALLOW filter (never silently allow-all),
// a rule is enforced on TCP only if it is on HTTP, and the proxy's RBAC
// engine compiles every filter.
func FuzzAuthorizationPolicy(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"action":"DENY"}`,
		`{"rules":[{}]}`,
		`{"action":"AUDIT","rules":[{"to":[{"operation":{"methods":["GET"]}}]}]}`,
		`{"rules":[{"from":[{"source":{"principals":["*"],"notPrincipals":["a*","*b",""],"requestPrincipals":["iss/sub"],"namespaces":["*","a*"],"serviceAccounts":["a/b","bad"],"trustDomains":["td","*"],"ipBlocks":["10.0.0.0/8","::1","x"],"remoteIpBlocks":["1.2.3.4/33"]}}]}]}`,
		`{"action":"DENY","rules":[{"to":[{"operation":{"hosts":["*.a","A.B"],"ports":["0","65536","80"],"methods":["*"],"paths":["","/a/{*}/{**}","/{x}","*","/b*"],"notPaths":["*.png"]}}]}]}`,
		`{"rules":[{"when":[{"key":"request.headers[]","values":["a"]},{"key":"request.auth.claims[a][b]","notValues":["*"]},{"key":"request.auth.claims[]","values":["x"]},{"key":"destination.port","values":["x"]},{"key":"source.ip"},{"key":"request.headers[X-A\n]","values":["1"]}]}]}`,
		`{"action":"CUSTOM","provider":{"name":"x"},"rules":[{}]}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		p := &securityv1beta1.AuthorizationPolicy{}
		if err := p.UnmarshalJSON([]byte(spec)); err != nil {
			t.Skip()
		}
		p.Selector, p.TargetRef, p.TargetRefs = nil, nil, nil
		push := newPush()
		push.AuthorizationPolicies = []model.Config[*securityv1beta1.AuthorizationPolicy]{{Meta: meta(model.KindAuthorizationPolicy, "ns", "p", 0), Spec: p}}
		proxy := sidecar("ns", map[string]string{"app": "a"})
		httpFilters := httpRBAC(t, InboundHTTPFilters(push, proxy, 80))
		netFilters := netRBAC(t, InboundNetworkFilters(push, proxy, 80))
		_ = SkippedFor(push, proxy)
		// The proxy must accept everything pilot sends.
		for _, r := range httpFilters {
			if _, err := proxyrbac.Compile(r.GetRules(), r.GetShadowRules(), proxyrbac.HTTP); err != nil {
				t.Fatalf("proxy rejects HTTP rbac: %v", err)
			}
		}
		for _, r := range netFilters {
			if _, err := proxyrbac.Compile(r.GetRules(), r.GetShadowRules(), proxyrbac.Network); err != nil {
				t.Fatalf("proxy rejects network rbac: %v", err)
			}
		}

		find := func(rules []*rbac.RBAC, action rbac.RBAC_Action) *rbac.RBAC {
			for _, r := range rules {
				if r != nil && r.GetAction() == action {
					return r
				}
			}
			return nil
		}
		var hr, nr []*rbac.RBAC
		for _, r := range httpFilters {
			hr = append(hr, r.GetRules())
		}
		for _, r := range netFilters {
			nr = append(nr, r.GetRules())
		}
		if p.GetAction() == securityv1beta1.AuthorizationPolicy_ALLOW {
			h, n := find(hr, rbac.RBAC_ALLOW), find(nr, rbac.RBAC_ALLOW)
			if h == nil || n == nil {
				t.Fatal("ALLOW policy without an ALLOW filter")
			}
			for name := range n.GetPolicies() {
				if _, ok := h.GetPolicies()[name]; !ok {
					t.Errorf("ALLOW rule %s enforced on TCP but not on HTTP", name)
				}
			}
		}
		if p.GetAction() == securityv1beta1.AuthorizationPolicy_DENY {
			h, n := find(hr, rbac.RBAC_DENY), find(nr, rbac.RBAC_DENY)
			if len(h.GetPolicies()) != len(n.GetPolicies()) {
				t.Errorf("DENY: %d rules on HTTP, %d on TCP", len(h.GetPolicies()), len(n.GetPolicies()))
			}
		}
	})
}
