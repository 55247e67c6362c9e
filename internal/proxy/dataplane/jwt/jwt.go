// Package jwt is the data plane's JWT authentication filter (Envoy's
// jwt_authn as RequestAuthentication translates to it): tokens are taken
// from headers or query parameters, verified with go-jose against a local
// or remote (cached) JWKS, checked for issuer, audiences and lifetime, and
// their claims made available to RBAC as request.auth.* metadata.
package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Fetcher fetches a remote JWKS document through the named cluster.
type Fetcher func(ctx context.Context, cluster, uri string) ([]byte, error)

// Filter is a compiled jwt_authn configuration.
type Filter struct {
	providers map[string]*provider
	rules     []rule
	now       func() time.Time
}

type rule struct {
	prefix, path string
	req          requirement
}

type provider struct {
	name       string
	issuer     string
	audiences  []string
	forward    bool
	headers    []*jwtv3.JwtHeader
	params     []string
	cookies    []string
	claimHdrs  []*jwtv3.JwtClaimToHeader
	payloadHdr string
	skew       time.Duration
	keys       func(ctx context.Context) (*jose.JSONWebKeySet, error)
}

// Algorithms accepted in tokens.
var algs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.HS256, jose.HS384, jose.HS512}

// Compile builds a Filter. fetch is used for remote JWKS.
func Compile(cfg *jwtv3.JwtAuthentication, fetch Fetcher) (*Filter, error) {
	f := &Filter{providers: map[string]*provider{}, now: time.Now}
	for name, p := range cfg.GetProviders() {
		pr, err := compileProvider(name, p, fetch)
		if err != nil {
			return nil, fmt.Errorf("provider %s: %w", name, err)
		}
		f.providers[name] = pr
	}
	if len(cfg.GetRequirementMap()) > 0 || len(cfg.GetFilterStateRules().GetRequires()) > 0 {
		return nil, errors.New("requirement_map and filter_state_rules are not supported")
	}
	for i, r := range cfg.GetRules() {
		var ru rule
		switch m := r.GetMatch().GetPathSpecifier().(type) {
		case *route.RouteMatch_Prefix:
			ru.prefix = m.Prefix
		case *route.RouteMatch_Path:
			ru.path = m.Path
		default:
			return nil, fmt.Errorf("rule %d: match %T is not supported", i, m)
		}
		if len(r.GetMatch().GetHeaders()) > 0 || len(r.GetMatch().GetQueryParameters()) > 0 {
			return nil, fmt.Errorf("rule %d: header and query matches are not supported", i)
		}
		if r.GetRequirementName() != "" {
			return nil, fmt.Errorf("rule %d: requirement_name is not supported", i)
		}
		req, err := f.compileReq(r.GetRequires())
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		ru.req = req
		f.rules = append(f.rules, ru)
	}
	return f, nil
}

func compileProvider(name string, p *jwtv3.JwtProvider, fetch Fetcher) (*provider, error) {
	pr := &provider{
		name: name, issuer: p.GetIssuer(), audiences: p.GetAudiences(), forward: p.GetForward(),
		headers: p.GetFromHeaders(), params: p.GetFromParams(), claimHdrs: p.GetClaimToHeaders(),
		payloadHdr: p.GetForwardPayloadHeader(), skew: 60 * time.Second,
	}
	if p.GetClockSkewSeconds() > 0 {
		pr.skew = time.Duration(p.GetClockSkewSeconds()) * time.Second
	}
	pr.cookies = p.GetFromCookies()
	// Tokens are looked for where the provider says, else in the default
	// places (Envoy's rule: only when headers, params and cookies are all
	// unset).
	if len(pr.headers) == 0 && len(pr.params) == 0 && len(pr.cookies) == 0 {
		pr.headers = []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}}
		pr.params = []string{"access_token"}
	}
	switch src := p.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		b, err := localData(src.LocalJwks)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		ks, err := parseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		pr.keys = func(context.Context) (*jose.JSONWebKeySet, error) { return ks, nil }
	case *jwtv3.JwtProvider_RemoteJwks:
		uri := src.RemoteJwks.GetHttpUri()
		if uri.GetUri() == "" || uri.GetCluster() == "" {
			return nil, errors.New("remote_jwks needs http_uri.uri and http_uri.cluster")
		}
		if fetch == nil {
			return nil, errors.New("remote_jwks without a fetcher")
		}
		ttl := 5 * time.Minute
		if d := src.RemoteJwks.GetCacheDuration(); d != nil && d.AsDuration() > 0 {
			ttl = d.AsDuration()
		}
		timeout := 5 * time.Second
		if d := uri.GetTimeout(); d != nil && d.AsDuration() > 0 {
			timeout = d.AsDuration()
		}
		c := &remoteKeys{cluster: uri.GetCluster(), uri: uri.GetUri(), ttl: ttl, timeout: timeout, fetch: fetch}
		pr.keys = c.get
	default:
		return nil, fmt.Errorf("jwks source %T is not supported", src)
	}
	return pr, nil
}

func localData(ds *core.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *core.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *core.DataSource_InlineBytes:
		return s.InlineBytes, nil
	}
	return nil, fmt.Errorf("data source %T is not supported", ds.GetSpecifier())
}

func parseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	ks := &jose.JSONWebKeySet{}
	if err := json.Unmarshal(b, ks); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if len(ks.Keys) == 0 {
		return nil, errors.New("jwks has no keys")
	}
	return ks, nil
}

// remoteKeys caches a remote JWKS for its cache duration.
type remoteKeys struct {
	cluster, uri string
	ttl, timeout time.Duration
	fetch        Fetcher

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	expires time.Time
}

func (c *remoteKeys) get(ctx context.Context) (*jose.JSONWebKeySet, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys != nil && time.Now().Before(c.expires) {
		return c.keys, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	b, err := c.fetch(ctx, c.cluster, c.uri)
	if err != nil {
		if c.keys != nil {
			return c.keys, nil // keep serving the last good set
		}
		return nil, fmt.Errorf("fetching jwks from %s: %w", c.uri, err)
	}
	ks, err := parseJWKS(b)
	if err != nil {
		return nil, err
	}
	c.keys, c.expires = ks, time.Now().Add(c.ttl)
	return ks, nil
}

// requirement evaluation outcome.
type outcome int

const (
	ok outcome = iota
	missing
	invalid
)

type requirement func(ctx context.Context, r *http.Request, res *Result) (outcome, string)

func (f *Filter) compileReq(req *jwtv3.JwtRequirement) (requirement, error) {
	if req == nil {
		return func(context.Context, *http.Request, *Result) (outcome, string) { return ok, "" }, nil
	}
	switch t := req.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		p := f.providers[t.ProviderName]
		if p == nil {
			return nil, fmt.Errorf("unknown provider %q", t.ProviderName)
		}
		return func(ctx context.Context, r *http.Request, res *Result) (outcome, string) {
			return f.verify(ctx, p, nil, r, res)
		}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p := f.providers[t.ProviderAndAudiences.GetProviderName()]
		if p == nil {
			return nil, fmt.Errorf("unknown provider %q", t.ProviderAndAudiences.GetProviderName())
		}
		auds := t.ProviderAndAudiences.GetAudiences()
		return func(ctx context.Context, r *http.Request, res *Result) (outcome, string) {
			return f.verify(ctx, p, auds, r, res)
		}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		var subs []requirement
		allowMissing := false
		for _, s := range t.RequiresAny.GetRequirements() {
			if s.GetAllowMissing() != nil {
				allowMissing = true
				continue
			}
			c, err := f.compileReq(s)
			if err != nil {
				return nil, err
			}
			subs = append(subs, c)
		}
		return func(ctx context.Context, r *http.Request, res *Result) (outcome, string) {
			worst, msg := missing, "Jwt is missing"
			for _, s := range subs {
				o, m := s(ctx, r, res)
				if o == ok {
					return ok, ""
				}
				if o == invalid {
					worst, msg = invalid, m
				}
			}
			if worst == missing && allowMissing {
				return ok, ""
			}
			return worst, msg
		}, nil
	case *jwtv3.JwtRequirement_RequiresAll:
		var subs []requirement
		for _, s := range t.RequiresAll.GetRequirements() {
			c, err := f.compileReq(s)
			if err != nil {
				return nil, err
			}
			subs = append(subs, c)
		}
		return func(ctx context.Context, r *http.Request, res *Result) (outcome, string) {
			for _, s := range subs {
				if o, m := s(ctx, r, res); o != ok {
					return o, m
				}
			}
			return ok, ""
		}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return func(ctx context.Context, r *http.Request, res *Result) (outcome, string) {
			// Verify anything present so valid claims still reach RBAC.
			for _, p := range f.providers {
				_, _ = f.verify(ctx, p, nil, r, res)
			}
			return ok, ""
		}, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return func(context.Context, *http.Request, *Result) (outcome, string) { return ok, "" }, nil
	default:
		return nil, fmt.Errorf("requirement %T is not supported", t)
	}
}

// Result is what authentication established; Metadata is the
// istio_authn metadata RBAC reads.
type Result struct {
	Metadata map[string]any
}

// Authenticate runs the filter on r. On failure it returns the HTTP status
// (401) and message to answer with; on success it may have modified r's
// headers (token removal, claim headers).
func (f *Filter) Authenticate(ctx context.Context, r *http.Request) (*Result, int, string) {
	res := &Result{}
	path := r.URL.Path
	for _, ru := range f.rules {
		if (ru.path != "" && path == ru.path) || (ru.path == "" && strings.HasPrefix(path, ru.prefix)) {
			o, msg := ru.req(ctx, r, res)
			if o != ok {
				return nil, http.StatusUnauthorized, msg
			}
			return res, 0, ""
		}
	}
	return res, 0, ""
}

// extract finds a provider's token and removes it unless forwarded.
func (p *provider) extract(r *http.Request) (string, func()) {
	for _, h := range p.headers {
		v := r.Header.Get(h.GetName())
		if v == "" {
			continue
		}
		tok, ok := strings.CutPrefix(v, h.GetValuePrefix())
		if !ok || tok == "" {
			continue
		}
		name := h.GetName()
		return strings.TrimSpace(tok), func() { r.Header.Del(name) }
	}
	q := r.URL.Query()
	for _, name := range p.params {
		if v := q.Get(name); v != "" {
			return v, func() {
				q.Del(name)
				r.URL.RawQuery = q.Encode()
			}
		}
	}
	for _, name := range p.cookies {
		// A token in a cookie stays: the Cookie header carries the
		// client's other cookies too.
		if c, err := r.Cookie(name); err == nil && c.Value != "" {
			return c.Value, func() {}
		}
	}
	return "", nil
}

func (f *Filter) verify(ctx context.Context, p *provider, auds []string, r *http.Request, res *Result) (outcome, string) {
	tok, remove := p.extract(r)
	if tok == "" {
		return missing, "Jwt is missing"
	}
	claims, err := f.check(ctx, p, auds, tok)
	if err != nil {
		return invalid, err.Error()
	}
	if !p.forward {
		remove()
	}
	for _, ch := range p.claimHdrs {
		if v, ok := claims[ch.GetClaimName()]; ok {
			r.Header.Set(ch.GetHeaderName(), claimString(v))
		}
	}
	if p.payloadHdr != "" {
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			r.Header.Set(p.payloadHdr, parts[1])
		}
	}
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	md := map[string]any{
		"request.auth.principal": iss + "/" + sub,
		"request.auth.claims":    claims,
	}
	if a := audList(claims["aud"]); len(a) > 0 {
		md["request.auth.audiences"] = strings.Join(a, ",")
	}
	if azp, ok := claims["azp"].(string); ok {
		md["request.auth.presenter"] = azp
	}
	res.Metadata = md
	return ok, ""
}

func claimString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case []any:
		var parts []string
		for _, e := range t {
			parts = append(parts, claimString(e))
		}
		return strings.Join(parts, ",")
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

func audList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// check verifies the signature and the standard claims.
func (f *Filter) check(ctx context.Context, p *provider, auds []string, tok string) (map[string]any, error) {
	sig, err := jose.ParseSigned(tok, algs)
	if err != nil {
		return nil, errors.New("Jwt is not in the form of Header.Payload.Signature")
	}
	ks, err := p.keys(ctx)
	if err != nil {
		return nil, errors.New("Jwks remote fetch is failed")
	}
	var payload []byte
	verified := false
	for _, s := range sig.Signatures {
		cands := ks.Keys
		if s.Header.KeyID != "" {
			cands = ks.Key(s.Header.KeyID)
		}
		for _, k := range cands {
			if b, err := sig.Verify(k); err == nil {
				payload, verified = b, true
				break
			}
		}
	}
	if !verified {
		return nil, errors.New("Jwt verification fails")
	}
	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errors.New("Jwt payload is not JSON")
	}
	if p.issuer != "" && claims["iss"] != p.issuer {
		return nil, errors.New("Jwt issuer is not configured")
	}
	want := auds
	if want == nil {
		want = p.audiences
	}
	if len(want) > 0 {
		got := audList(claims["aud"])
		found := false
		for _, w := range want {
			for _, g := range got {
				if strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(g, "https://"), "http://"), "/") ==
					strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(w, "https://"), "http://"), "/") {
					found = true
				}
			}
		}
		if !found {
			return nil, errors.New("Audiences in Jwt are not allowed")
		}
	}
	now := f.now()
	if exp, ok := claims["exp"].(float64); ok && now.After(time.Unix(int64(exp), 0).Add(p.skew)) {
		return nil, errors.New("Jwt is expired")
	}
	if nbf, ok := claims["nbf"].(float64); ok && now.Add(p.skew).Before(time.Unix(int64(nbf), 0)) {
		return nil, errors.New("Jwt not yet valid")
	}
	return claims, nil
}
