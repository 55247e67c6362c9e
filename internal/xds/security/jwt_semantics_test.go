package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	proxyjwt "github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/jwt"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane/rbac"
)

// TestJWTSemantics runs the translated jwt_authn filter and the rbac
// filters in the proxy's implementations (internal/proxy/dataplane/jwt
// and rbac): a valid token passes and names the request principal, an
// invalid one is refused with 401, a missing one passes authentication
// and is stopped by a requestPrincipals policy, and tokens of an issuer
// whose keys pilot could not resolve are refused.
func TestJWTSemantics(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token := func(iss, sub string, aud []string, groups []string) string {
		tok, err := josejwt.Signed(signer).Claims(josejwt.Claims{
			Issuer: iss, Subject: sub, Audience: aud, Expiry: josejwt.NewNumericDate(time.Now().Add(time.Hour)),
		}).Claims(map[string]any{"groups": groups}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	push := newPush()
	push.RequestAuthentications = []model.Config[*securityRA]{
		ra(t, "bookinfo", "jwt", 0, `jwtRules: [{issuer: "https://issuer.test", audiences: [bookinfo], jwks: '`+string(jwks)+`'}]`),
		ra(t, "bookinfo", "external", 1, `jwtRules: [{issuer: "https://external.test", jwksUri: "https://keys.external.test/jwks"}]`),
	}
	push.AuthorizationPolicies = []model.Config[*securityAP]{ap(t, "bookinfo", "need-jwt", 0, `
rules:
- from: [{source: {requestPrincipals: ["https://issuer.test/*"]}}]
  when: [{key: "request.auth.claims[groups]", values: [reviewers]}]`)}
	proxy := sidecar("bookinfo", nil)
	filters := InboundHTTPFilters(push, proxy, 9080)
	authn, err := proxyjwt.Compile(jwtConfig(t, filters), nil)
	if err != nil {
		t.Fatalf("the proxy rejects the jwt_authn filter: %v", err)
	}
	rb := httpRBAC(t, filters)
	engine, err := rbac.Compile(rb[0].GetRules(), nil, rbac.HTTP)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		token      string
		wantStatus int // 0: authenticated (or no token)
		allowed    bool
	}{
		{"valid token in a group", token("https://issuer.test", "alice", []string{"bookinfo"}, []string{"dev", "reviewers"}), 0, true},
		{"valid token, other group", token("https://issuer.test", "bob", []string{"bookinfo"}, []string{"dev"}), 0, false},
		{"wrong audience", token("https://issuer.test", "alice", []string{"other"}, []string{"reviewers"}), http.StatusUnauthorized, false},
		{"unknown issuer", token("https://unknown.test", "alice", []string{"bookinfo"}, []string{"reviewers"}), http.StatusUnauthorized, false},
		{"issuer whose keys pilot could not resolve", token("https://external.test", "alice", nil, []string{"reviewers"}), http.StatusUnauthorized, false},
		{"garbage", "not.a.jwt", http.StatusUnauthorized, false},
		{"no token", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://reviews:9080/reviews/1", nil)
			if tt.token != "" {
				r.Header.Set("Authorization", "Bearer "+tt.token)
			}
			res, status, msg := authn.Authenticate(context.Background(), r)
			if status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, msg, tt.wantStatus)
			}
			if status != 0 {
				return
			}
			req := request("", "GET", "/reviews/1")
			req.Metadata = res.Metadata
			if got := engine.Evaluate(req).Allowed; got != tt.allowed {
				t.Errorf("allowed = %v, want %v (metadata %v)", got, tt.allowed, res.Metadata)
			}
		})
	}
}
