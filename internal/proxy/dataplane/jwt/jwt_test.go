package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/emptypb"
)

type keyPair struct {
	key  *ecdsa.PrivateKey
	jwks string
}

func newKey(t *testing.T, kid string) *keyPair {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256"}}})
	return &keyPair{key: k, jwks: string(b)}
}

func (k *keyPair) sign(t *testing.T, kid string, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	o, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := o.CompactSerialize()
	return tok
}

func local(jwks string) *jwtv3.JwtProvider_LocalJwks {
	return &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: jwks}}}
}

func needs(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func ruleFor(prefix string, req *jwtv3.JwtRequirement) *jwtv3.RequirementRule {
	return &jwtv3.RequirementRule{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: req}}
}

func TestRequirements(t *testing.T) {
	a, b := newKey(t, "a"), newKey(t, "b")
	exp := time.Now().Add(time.Hour).Unix()
	tokA := a.sign(t, "a", map[string]any{"iss": "iss-a", "sub": "alice", "aud": []any{"svc"}, "exp": exp, "groups": []any{"dev"}})
	tokB := b.sign(t, "b", map[string]any{"iss": "iss-b", "sub": "bob", "exp": exp})
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{
			"a": {Issuer: "iss-a", Audiences: []string{"svc"}, JwksSourceSpecifier: local(a.jwks), Forward: true},
			"b": {Issuer: "iss-b", JwksSourceSpecifier: local(b.jwks), FromHeaders: []*jwtv3.JwtHeader{{Name: "x-token"}}, FromParams: []string{"tok"}},
		},
		Rules: []*jwtv3.RequirementRule{
			ruleFor("/any", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{needs("a"), needs("b")}}}}),
			ruleFor("/all", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: []*jwtv3.JwtRequirement{needs("a"), needs("b")}}}}),
			ruleFor("/optional", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}}),
			ruleFor("/aud", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderAndAudiences{ProviderAndAudiences: &jwtv3.ProviderWithAudiences{ProviderName: "a", Audiences: []string{"other"}}}}),
		},
	}
	f, err := Compile(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, target string
		hdr          map[string]string
		status       int
		principal    string
	}{
		{"any: a", "/any", map[string]string{"Authorization": "Bearer " + tokA}, 0, "iss-a/alice"},
		{"any: b in header", "/any", map[string]string{"X-Token": tokB}, 0, "iss-b/bob"},
		{"any: b in query", "/any?tok=" + tokB, nil, 0, "iss-b/bob"},
		{"any: missing", "/any", nil, 401, ""},
		{"any: b's token in a's header", "/any", map[string]string{"Authorization": "Bearer " + tokB}, 401, ""},
		{"all: both", "/all", map[string]string{"Authorization": "Bearer " + tokA, "X-Token": tokB}, 0, ""},
		{"all: one", "/all", map[string]string{"Authorization": "Bearer " + tokA}, 401, ""},
		{"optional: bad token passes", "/optional", map[string]string{"Authorization": "Bearer bad.token.here"}, 0, ""},
		{"optional: good token gives claims", "/optional", map[string]string{"Authorization": "Bearer " + tokA}, 0, "iss-a/alice"},
		{"audience override", "/aud", map[string]string{"Authorization": "Bearer " + tokA}, 401, ""},
		{"no rule", "/free", nil, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, c.target, nil)
			for k, v := range c.hdr {
				r.Header.Set(k, v)
			}
			res, status, msg := f.Authenticate(context.Background(), r)
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, msg, c.status)
			}
			if c.principal != "" {
				if got := res.Metadata["request.auth.principal"]; got != c.principal {
					t.Fatalf("principal %v, want %s", got, c.principal)
				}
			}
			if c.name == "any: a" && r.Header.Get("Authorization") == "" {
				t.Error("forward: true removed the token")
			}
			if c.name == "any: b in header" && r.Header.Get("X-Token") != "" {
				t.Error("forward: false kept the token")
			}
		})
	}
}

func TestRemoteJWKSCachedAndFailure(t *testing.T) {
	k := newKey(t, "k")
	calls := 0
	fail := false
	fetch := func(_ context.Context, cluster, uri string) ([]byte, error) {
		calls++
		if fail {
			return nil, errors.New("down")
		}
		if cluster != "jwks-cluster" || uri != "https://idp/keys" {
			t.Errorf("fetch(%s, %s)", cluster, uri)
		}
		return []byte(k.jwks), nil
	}
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "i", JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &core.HttpUri{Uri: "https://idp/keys", HttpUpstreamType: &core.HttpUri_Cluster{Cluster: "jwks-cluster"}}}}}},
		Rules: []*jwtv3.RequirementRule{ruleFor("/", needs("p"))},
	}
	f, err := Compile(cfg, fetch)
	if err != nil {
		t.Fatal(err)
	}
	tok := k.sign(t, "k", map[string]any{"iss": "i", "sub": "s"})
	for i := 0; i < 3; i++ {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		if _, status, msg := f.Authenticate(context.Background(), r); status != 0 {
			t.Fatalf("status %d %s", status, msg)
		}
	}
	if calls != 1 {
		t.Fatalf("jwks fetched %d times, want 1", calls)
	}
	// A provider whose keys were never fetched fails closed.
	fail = true
	f2, _ := Compile(cfg, fetch)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if _, status, msg := f2.Authenticate(context.Background(), r); status != 401 || msg != "Jwks remote fetch is failed" {
		t.Fatalf("got %d %q", status, msg)
	}
}

func TestCompileRejectsUnsupported(t *testing.T) {
	for name, cfg := range map[string]*jwtv3.JwtAuthentication{
		"unknown provider": {Rules: []*jwtv3.RequirementRule{ruleFor("/", needs("nope"))}},
		"empty jwks":       {Providers: map[string]*jwtv3.JwtProvider{"p": {JwksSourceSpecifier: local(`{"keys":[]}`)}}},
	} {
		if _, err := Compile(cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A provider with from_cookies reads the token from the named cookie, and
// only there: the default Authorization header is then not consulted.
func TestTokenFromCookie(t *testing.T) {
	k := newKey(t, "k")
	tok := k.sign(t, "k", map[string]any{"iss": "iss-c", "sub": "carol", "exp": time.Now().Add(time.Hour).Unix()})
	f, err := Compile(&jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"c": {Issuer: "iss-c", JwksSourceSpecifier: local(k.jwks), FromCookies: []string{"session", "token"}}},
		Rules:     []*jwtv3.RequirementRule{ruleFor("/", needs("c"))},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		cookie    string
		authz     string
		status    int
		principal string
	}{
		{name: "second cookie", cookie: "theme=dark; token=" + tok, principal: "iss-c/carol"},
		{name: "first cookie", cookie: "session=" + tok, principal: "iss-c/carol"},
		{name: "bad token", cookie: "session=bad.token.here", status: 401},
		{name: "header only", authz: "Bearer " + tok, status: 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if c.cookie != "" {
				r.Header.Set("Cookie", c.cookie)
			}
			if c.authz != "" {
				r.Header.Set("Authorization", c.authz)
			}
			res, status, msg := f.Authenticate(context.Background(), r)
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, msg, c.status)
			}
			if c.principal != "" && res.Metadata["request.auth.principal"] != c.principal {
				t.Fatalf("principal %v", res.Metadata["request.auth.principal"])
			}
			if c.principal != "" && r.Header.Get("Cookie") != c.cookie {
				t.Errorf("Cookie header changed to %q", r.Header.Get("Cookie"))
			}
		})
	}
}
