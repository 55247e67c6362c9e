package security

import (
	"strings"
	"testing"

	jwt "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func ra(t testing.TB, ns, name string, age int, specYAML string) model.Config[*securityv1beta1.RequestAuthentication] {
	t.Helper()
	spec := &securityv1beta1.RequestAuthentication{}
	j, err := yaml.YAMLToJSON([]byte(specYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.UnmarshalJSON(j); err != nil {
		t.Fatalf("bad policy: %v", err)
	}
	return model.Config[*securityv1beta1.RequestAuthentication]{Meta: meta(model.KindRequestAuthentication, ns, name, age), Spec: spec}
}

func jwtConfig(t testing.TB, filters []*hcm.HttpFilter) *jwt.JwtAuthentication {
	t.Helper()
	for _, f := range filters {
		mustValidate(t, f)
		if f.GetName() == JWTAuthnFilter {
			c := &jwt.JwtAuthentication{}
			if err := f.GetTypedConfig().UnmarshalTo(c); err != nil {
				t.Fatal(err)
			}
			mustValidate(t, c)
			return c
		}
	}
	return nil
}

// pushWithJWKSService has a service serving JWKS on 8080 and 443.
func pushWithJWKSService() *model.PushContext {
	push := newPush()
	push.Services = []*model.Service{{
		Hostname: "jwks.auth.svc.cluster.local", Name: "jwks", Namespace: "auth",
		Ports: []model.Port{{Name: "http", Port: 8080, Protocol: model.ProtocolHTTP}, {Name: "https", Port: 443, Protocol: model.ProtocolHTTPS}},
	}}
	return push
}

func TestJWTProviders(t *testing.T) {
	const jwks = testJWKS
	tests := []struct {
		name    string
		spec    string
		want    string // YAML of the provider "origins-0"
		skipped string // substring of the Skipped reason, "" for none
	}{
		{name: "inline jwks with every option", spec: `
jwtRules:
- issuer: https://issuer.example
  audiences: [api, web]
  jwks: '` + jwks + `'
  fromHeaders: [{name: X-Jwt, prefix: "Bearer "}]
  fromParams: [token]
  forwardOriginalToken: true
  outputPayloadToHeader: X-Jwt-Payload
  outputClaimToHeaders: [{header: X-Sub, claim: sub}]`, want: `
issuer: https://issuer.example
audiences: [api, web]
localJwks: {inlineString: '` + jwks + `'}
forward: true
fromHeaders: [{name: x-jwt, valuePrefix: "Bearer "}]
fromParams: [token]
forwardPayloadHeader: x-jwt-payload
payloadInMetadata: https://issuer.example
claimToHeaders: [{headerName: x-sub, claimName: sub}]`},
		{name: "jwksUri of an in-mesh service, FQDN", spec: `
jwtRules: [{issuer: iss, jwksUri: "http://jwks.auth.svc.cluster.local:8080/keys", timeout: 3s}]`, want: `
issuer: iss
payloadInMetadata: iss
remoteJwks: {httpUri: {uri: "http://jwks.auth.svc.cluster.local:8080/keys", cluster: "outbound|8080||jwks.auth.svc.cluster.local", timeout: 3s}}`},
		{name: "jwksUri short name, default https port", spec: `
jwtRules: [{issuer: iss, jwksUri: "https://jwks.auth/keys"}]`, want: `
issuer: iss
payloadInMetadata: iss
remoteJwks: {httpUri: {uri: "https://jwks.auth/keys", cluster: "outbound|443||jwks.auth.svc.cluster.local", timeout: 5s}}`},
		{name: "jwksUri outside the mesh rejects the issuer's tokens", spec: `
jwtRules: [{issuer: iss, jwksUri: "https://www.googleapis.com/oauth2/v3/certs"}]`,
			want: `{issuer: iss, payloadInMetadata: iss, localJwks: {inlineString: '` + UnusableJWKS + `'}}`, skipped: "not a service known to the mesh"},
		{name: "jwksUri unknown port rejects the issuer's tokens", spec: `
jwtRules: [{issuer: iss, jwksUri: "http://jwks.auth.svc.cluster.local:9999/keys"}]`,
			want: `{issuer: iss, payloadInMetadata: iss, localJwks: {inlineString: '` + UnusableJWKS + `'}}`, skipped: "port 9999"},
		{name: "no jwks source rejects the issuer's tokens", spec: `jwtRules: [{issuer: iss}]`,
			want: `{issuer: iss, payloadInMetadata: iss, localJwks: {inlineString: '` + UnusableJWKS + `'}}`, skipped: "neither jwks nor jwksUri"},
		{name: "tokens from cookies", spec: `jwtRules: [{issuer: iss, jwks: '` + jwks + `', fromCookies: [session]}]`,
			want: `{issuer: iss, payloadInMetadata: iss, fromCookies: [session], localJwks: {inlineString: '` + jwks + `'}}`},
		{name: "invalid inline jwks rejects the issuer's tokens", spec: `jwtRules: [{issuer: iss, jwks: "{}"}]`,
			want: `{issuer: iss, payloadInMetadata: iss, localJwks: {inlineString: '` + UnusableJWKS + `'}}`, skipped: "jwks has no keys"},
		{name: "malformed inline jwks rejects the issuer's tokens", spec: `jwtRules: [{issuer: iss, jwks: "not json"}]`,
			want: `{issuer: iss, payloadInMetadata: iss, localJwks: {inlineString: '` + UnusableJWKS + `'}}`, skipped: "not a JSON Web Key Set"},
		{name: "empty issuer is skipped", spec: `jwtRules: [{jwks: '` + jwks + `'}]`, skipped: "issuer is empty"},
		{name: "bad claim header is skipped", spec: `
jwtRules: [{issuer: iss, jwks: '` + jwks + `', outputClaimToHeaders: [{header: "bad header", claim: sub}]}]`, skipped: "outputClaimToHeaders"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := pushWithJWKSService()
			push.RequestAuthentications = append(push.RequestAuthentications, ra(t, "bookinfo", "jwt", 0, tt.spec))
			proxy := sidecar("bookinfo", nil)
			cfg := jwtConfig(t, InboundHTTPFilters(push, proxy, 80))
			skipped := SkippedFor(push, proxy)
			if tt.skipped != "" {
				if len(skipped) != 1 || !strings.Contains(skipped[0].Reason, tt.skipped) || skipped[0].Kind != string(model.KindRequestAuthentication) {
					t.Errorf("skipped = %+v, want %q", skipped, tt.skipped)
				}
			} else if len(skipped) != 0 {
				t.Errorf("skipped = %+v", skipped)
			}
			if tt.want == "" {
				if cfg != nil {
					t.Errorf("jwt_authn present with only a skipped provider: %v", cfg)
				}
				return
			}
			if cfg == nil {
				t.Fatal("no jwt_authn filter")
			}
			assertJSON(t, cfg.GetProviders()["origins-0"], tt.want)
		})
	}
}

// TestJWTRules checks the requirement (any provider or no token), the
// provider order across policies and the filter's place before rbac.
func TestJWTRules(t *testing.T) {
	push := pushWithJWKSService()
	push.RequestAuthentications = append(push.RequestAuthentications,
		ra(t, "bookinfo", "newer", 5, `jwtRules: [{issuer: b, jwks: '`+testJWKS+`'}]`),
		ra(t, rootNS, "mesh", 1, `jwtRules: [{issuer: a, jwks: '`+testJWKS+`'}]`),
		ra(t, "bookinfo", "other-app", 0, `{selector: {matchLabels: {app: other}}, jwtRules: [{issuer: c, jwks: '`+testJWKS+`'}]}`),
		ra(t, "elsewhere", "x", 0, `jwtRules: [{issuer: d, jwks: '`+testJWKS+`'}]`),
	)
	push.AuthorizationPolicies = append(push.AuthorizationPolicies, ap(t, "bookinfo", "p", 0, `{rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]}`))
	filters := InboundHTTPFilters(push, sidecar("bookinfo", map[string]string{"app": "reviews"}), 80)
	if len(filters) != 2 || filters[0].GetName() != JWTAuthnFilter || filters[1].GetName() != HTTPRBACFilter {
		t.Fatalf("filters = %v, want jwt_authn then rbac", filters)
	}
	cfg := jwtConfig(t, filters)
	if got := cfg.GetProviders()["origins-0"].GetIssuer() + cfg.GetProviders()["origins-1"].GetIssuer(); got != "ab" || len(cfg.GetProviders()) != 2 {
		t.Errorf("providers = %v, want origins-0 issuer a (oldest) and origins-1 issuer b", cfg.GetProviders())
	}
	assertJSON(t, cfg.GetRules()[0], `
match: {prefix: /}
requires: {requiresAny: {requirements: [{providerName: origins-0}, {providerName: origins-1}, {allowMissing: {}}]}}`)
}
