package security

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwt "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// DefaultJWKSFetchTimeout bounds a remote JWKS fetch when the rule sets no
// timeout.
const DefaultJWKSFetchTimeout = 5 * time.Second

type requestAuthn = model.Config[*securityv1beta1.RequestAuthentication]

// jwtAuthentication builds the jwt_authn config from every
// RequestAuthentication that selects the proxy (oldest first). Providers
// are named "origins-<n>" in that order. The single rule accepts a request
// with a valid token from any provider, or with no token at all; a token
// that fails verification is rejected with 401. Presence of a token is
// enforced by AuthorizationPolicy requestPrincipals, as in Istio.
//
// Each provider copies the verified payload into dynamic metadata under
// its issuer (payload_in_metadata); the proxy publishes the
// istio_authn keys (AuthnPrincipal ...) from it.
func (b *builder) jwtAuthentication() *jwt.JwtAuthentication {
	cfg := &jwt.JwtAuthentication{Providers: map[string]*jwt.JwtProvider{}}
	var names []string
	for _, i := range oldestFirst(b.push.RequestAuthentications) {
		ra := &b.push.RequestAuthentications[i]
		if !appliesMeshOrNamespace(b.push, b.proxy, ra.Namespace, ra.Spec.GetSelector()) {
			continue
		}
		if hasTargetRef(ra.Spec.GetTargetRef(), ra.Spec.GetTargetRefs()) {
			b.skipped(model.KindRequestAuthentication, ra.Meta, "targetRef policies apply to Gateway API gateways and waypoints, not to this proxy")
			continue
		}
		for j, rule := range ra.Spec.GetJwtRules() {
			p, keysErr, err := b.jwtProvider(rule)
			if err != nil {
				b.skipped(model.KindRequestAuthentication, ra.Meta, fmt.Sprintf("jwtRules[%d]: %v: provider left out", j, err))
				continue
			}
			if keysErr != nil {
				b.skipped(model.KindRequestAuthentication, ra.Meta, fmt.Sprintf("jwtRules[%d]: %v: the provider has no keys, its tokens are rejected", j, keysErr))
			}
			name := "origins-" + strconv.Itoa(len(names))
			names = append(names, name)
			cfg.Providers[name] = p
		}
	}
	if len(names) == 0 {
		return nil
	}
	reqs := make([]*jwt.JwtRequirement, 0, len(names)+1)
	for _, n := range names {
		reqs = append(reqs, &jwt.JwtRequirement{RequiresType: &jwt.JwtRequirement_ProviderName{ProviderName: n}})
	}
	reqs = append(reqs, &jwt.JwtRequirement{RequiresType: &jwt.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	cfg.Rules = []*jwt.RequirementRule{{
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwt.RequirementRule_Requires{Requires: &jwt.JwtRequirement{
			RequiresType: &jwt.JwtRequirement_RequiresAny{RequiresAny: &jwt.JwtRequirementOrList{Requirements: reqs}},
		}},
	}}
	return cfg
}

// UnusableJWKS is the key set of a provider whose keys cannot be had (a
// jwksUri outside the mesh, no key source, an invalid jwks): every token
// of its issuer fails verification, as it would if the keys were
// unreachable. It is the public half of a P-256 key whose private half
// was discarded when it was generated, so nothing can sign for it (an
// empty set would be refused by the proxy).
const UnusableJWKS = `{"keys":[{"use":"sig","kty":"EC","kid":"mizzen-unusable","crv":"P-256","alg":"ES256",` +
	`"x":"VrlLF7eXenmpuVtDAjv7ouVvUMJVudFPBJ7TP5pFZdY","y":"sCtue2WOi8x-XaWLwdo-bH2sFperVF8IgC1mo1sb8qs"}]}`

// validJWKS reports whether s is a JSON Web Key Set with at least one key
// the proxy can use.
func validJWKS(s string) error {
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(s), &ks); err != nil {
		return fmt.Errorf("jwks is not a JSON Web Key Set: %w", err)
	}
	if len(ks.Keys) == 0 {
		return errors.New("jwks has no keys")
	}
	return nil
}

// jwtProvider translates one JWT rule. err means the rule cannot be used
// at all; keysErr that its keys cannot be had, so the provider carries
// UnusableJWKS.
func (b *builder) jwtProvider(r *securityv1beta1.JWTRule) (p *jwt.JwtProvider, keysErr, err error) {
	if r.GetIssuer() == "" {
		return nil, nil, fmt.Errorf("issuer is empty")
	}
	p = &jwt.JwtProvider{
		Issuer:               r.GetIssuer(),
		Audiences:            r.GetAudiences(),
		Forward:              r.GetForwardOriginalToken(),
		FromParams:           r.GetFromParams(),
		FromCookies:          r.GetFromCookies(),
		ForwardPayloadHeader: strings.ToLower(r.GetOutputPayloadToHeader()),
		PayloadInMetadata:    r.GetIssuer(),
	}
	if h := p.ForwardPayloadHeader; h != "" && !validHeaderName(h) {
		return nil, nil, fmt.Errorf("outputPayloadToHeader %q is not a header name", h)
	}
	for _, h := range r.GetFromHeaders() {
		name := strings.ToLower(h.GetName())
		if !validHeaderName(name) {
			return nil, nil, fmt.Errorf("fromHeaders: %q is not a header name", h.GetName())
		}
		p.FromHeaders = append(p.FromHeaders, &jwt.JwtHeader{Name: name, ValuePrefix: h.GetPrefix()})
	}
	for _, c := range r.GetOutputClaimToHeaders() {
		name := strings.ToLower(c.GetHeader())
		if !validHeaderName(name) || strings.HasPrefix(name, ":") || c.GetClaim() == "" {
			return nil, nil, fmt.Errorf("outputClaimToHeaders: header %q or claim %q is invalid", c.GetHeader(), c.GetClaim())
		}
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwt.JwtClaimToHeader{HeaderName: name, ClaimName: c.GetClaim()})
	}
	local := func(jwks string) {
		p.JwksSourceSpecifier = &jwt.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
			Specifier: &core.DataSource_InlineString{InlineString: jwks},
		}}
	}
	switch {
	case r.GetJwks() != "":
		if err := validJWKS(r.GetJwks()); err != nil {
			local(UnusableJWKS)
			return p, err, nil
		}
		local(r.GetJwks())
	case r.GetJwksUri() != "":
		cluster, err := b.jwksCluster(r.GetJwksUri())
		if err != nil {
			local(UnusableJWKS)
			return p, err, nil
		}
		timeout := DefaultJWKSFetchTimeout
		if d := r.GetTimeout(); d != nil && d.AsDuration() > 0 {
			timeout = d.AsDuration()
		}
		p.JwksSourceSpecifier = &jwt.JwtProvider_RemoteJwks{RemoteJwks: &jwt.RemoteJwks{
			HttpUri: &core.HttpUri{
				Uri:              r.GetJwksUri(),
				HttpUpstreamType: &core.HttpUri_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(timeout),
			},
		}}
	default:
		local(UnusableJWKS)
		return p, fmt.Errorf("neither jwks nor jwksUri is set (OpenID discovery is not supported)"), nil
	}
	return p, nil, nil
}

// jwksCluster finds the outbound cluster serving a JWKS URI: the URI's host
// must be a service in the push (its FQDN, or name.namespace[.svc]) with
// the URI's port (default 80 for http, 443 for https).
func (b *builder) jwksCluster(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("jwksUri %q is not an http(s) URL", raw)
	}
	var p uint32 = 80
	if u.Scheme == "https" {
		p = 443
	}
	if ps := u.Port(); ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return "", fmt.Errorf("jwksUri %q has an invalid port", raw)
		}
		p = uint32(n)
	}
	host := strings.ToLower(u.Hostname())
	candidates := []string{host}
	if suffix := b.push.DomainSuffix; suffix != "" && !strings.HasSuffix(host, "."+suffix) {
		switch strings.Count(host, ".") {
		case 1:
			candidates = append(candidates, host+".svc."+suffix)
		case 2:
			if strings.HasSuffix(host, ".svc") {
				candidates = append(candidates, host+"."+suffix)
			}
		}
	}
	for _, h := range candidates {
		for _, svc := range b.push.ServicesByHost(h) {
			if _, ok := svc.PortByNumber(p); ok {
				return xds.ClusterName(xds.Outbound, p, "", svc.Hostname), nil
			}
		}
	}
	return "", fmt.Errorf("jwksUri host %s port %d is not a service known to the mesh", host, p)
}
