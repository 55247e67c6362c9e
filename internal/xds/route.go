package xds

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	cors "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// MeshGateway is the implicit gateway of sidecars in VirtualService
// `gateways`.
const MeshGateway = "mesh"

// routeCtx is where routes are being built: the gateway ("mesh" for
// sidecars, else "ns/name") and the port the listener serves.
type routeCtx struct {
	gateway string
	port    uint32
}

// vsGateways resolves a VirtualService's gateways to "mesh" or "ns/name".
func vsGateways(gws []string, vsNS string) []string {
	if len(gws) == 0 {
		return []string{MeshGateway}
	}
	out := make([]string, 0, len(gws))
	for _, gw := range gws {
		if gw == MeshGateway || strings.Contains(gw, "/") {
			out = append(out, gw)
		} else {
			out = append(out, vsNS+"/"+gw)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// boundVS are the visible VirtualServices bound to the gateway, oldest first.
func (g *gen) boundVS(gateway string) []*model.Config[*networking.VirtualService] {
	if out, ok := g.boundVSs[gateway]; ok {
		return out
	}
	var out []*model.Config[*networking.VirtualService]
	for _, vs := range g.vss {
		if contains(vsGateways(vs.Spec.GetGateways(), vs.Namespace), gateway) {
			out = append(out, vs)
		}
	}
	g.boundVSs[gateway] = out
	return out
}

// hostsOf are a VirtualService's hosts as FQDNs.
func (g *gen) hostsOf(vs *model.Config[*networking.VirtualService]) []string {
	if h, ok := g.vsHosts[vs]; ok {
		return h
	}
	var h []string
	for _, host := range vs.Spec.GetHosts() {
		if host != "" {
			h = append(h, g.fqdn(host, vs.Namespace))
		}
	}
	g.vsHosts[vs] = h
	return h
}

// vsForHost picks the VirtualService routing host: an exact host beats a
// wildcard; among equals the oldest wins and the others are recorded.
func (g *gen) vsForHost(vss []*model.Config[*networking.VirtualService], host string) *model.Config[*networking.VirtualService] {
	var exact, wild *model.Config[*networking.VirtualService]
	for _, vs := range vss {
		for _, h := range g.hostsOf(vs) {
			switch {
			case h == host:
				if exact == nil {
					exact = vs
				} else if exact != vs {
					g.skip(string(model.KindVirtualService), vs.Namespace, vs.Name, fmt.Sprintf("host %s is already routed by VirtualService %s", host, exact.Key()))
				}
			case hostMatches(h, host) && wild == nil:
				wild = vs
			}
		}
	}
	if exact != nil {
		return exact
	}
	return wild
}

// httpRoutes translates the HTTP routes of one VirtualService for a
// listener; ok is false when the VirtualService has no HTTP routes.
func (g *gen) httpRoutes(vs *model.Config[*networking.VirtualService], ctx routeCtx) (routes []*route.Route, ok bool) {
	if len(vs.Spec.GetHttp()) == 0 {
		return nil, false
	}
	vsGWs := vsGateways(vs.Spec.GetGateways(), vs.Namespace)
	for i, hr := range vs.Spec.GetHttp() {
		if hr == nil {
			continue
		}
		if d := hr.GetDelegate(); d != nil {
			routes = append(routes, g.delegatedRoutes(vs, i, hr, vsGWs, ctx)...)
			continue
		}
		matches := hr.GetMatch()
		if len(matches) == 0 {
			matches = []*networking.HTTPMatchRequest{nil}
		}
		for _, m := range matches {
			if !g.matchApplies(m, vsGWs, vs.Namespace, ctx) {
				continue
			}
			r, err := g.translateHTTPRoute(vs, hr, m, ctx)
			if err == nil {
				err = r.Validate()
			}
			if err != nil {
				g.skip(string(model.KindVirtualService), vs.Namespace, vs.Name, fmt.Sprintf("http[%d]: %v", i, err))
				continue
			}
			routes = append(routes, r)
		}
	}
	return routes, true
}

// matchApplies checks the parts of a match that select the caller rather
// than the request: gateways, port, sourceLabels, sourceNamespace.
func (g *gen) matchApplies(m *networking.HTTPMatchRequest, vsGWs []string, vsNS string, ctx routeCtx) bool {
	gws := vsGWs
	if len(m.GetGateways()) > 0 {
		gws = vsGateways(m.GetGateways(), vsNS)
	}
	if !contains(gws, ctx.gateway) {
		return false
	}
	if p := m.GetPort(); p != 0 && p != ctx.port {
		return false
	}
	if !labelsMatch(m.GetSourceLabels(), g.proxy.Labels) {
		return false
	}
	if ns := m.GetSourceNamespace(); ns != "" && ns != g.proxy.Namespace {
		return false
	}
	return true
}

// stringMatcher converts an Istio StringMatch; nil means any value (no
// match type, or an empty prefix, which Envoy does not accept).
func stringMatcher(s *networking.StringMatch, ignoreCase bool) (*matcher.StringMatcher, error) {
	switch {
	case s.GetExact() != "" || isExact(s):
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s.GetExact()}, IgnoreCase: ignoreCase}, nil
	case s.GetPrefix() != "":
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: s.GetPrefix()}, IgnoreCase: ignoreCase}, nil
	case s.GetRegex() != "":
		if _, err := regexp.Compile(s.GetRegex()); err != nil {
			return nil, fmt.Errorf("invalid regex %q: %w", s.GetRegex(), err)
		}
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: s.GetRegex()}}}, nil
	}
	return nil, nil
}

func isExact(s *networking.StringMatch) bool {
	_, ok := s.GetMatchType().(*networking.StringMatch_Exact)
	return ok
}

func isPrefix(s *networking.StringMatch) bool {
	_, ok := s.GetMatchType().(*networking.StringMatch_Prefix)
	return ok
}

func headerMatcher(name string, s *networking.StringMatch, invert bool) (*route.HeaderMatcher, error) {
	sm, err := stringMatcher(s, false)
	if err != nil {
		return nil, err
	}
	name = strings.ToLower(name)
	if strings.HasPrefix(name, ":") && !pseudoHeaders[name] {
		return nil, fmt.Errorf("header %q: only :method, :authority, :scheme and :path pseudo headers can be matched", name)
	}
	h := &route.HeaderMatcher{Name: name, InvertMatch: invert}
	if sm == nil {
		h.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		h.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: sm}
	}
	return h, nil
}

func routeMatch(m *networking.HTTPMatchRequest) (*route.RouteMatch, error) {
	rm := &route.RouteMatch{}
	uri := m.GetUri()
	switch {
	case uri.GetRegex() != "":
		if _, err := regexp.Compile(uri.GetRegex()); err != nil {
			return nil, fmt.Errorf("invalid uri regex %q: %w", uri.GetRegex(), err)
		}
		rm.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: uri.GetRegex()}}
	case isExact(uri):
		rm.PathSpecifier = &route.RouteMatch_Path{Path: uri.GetExact()}
	case isPrefix(uri):
		rm.PathSpecifier = &route.RouteMatch_Prefix{Prefix: uri.GetPrefix()}
	default:
		rm.PathSpecifier = &route.RouteMatch_Prefix{Prefix: "/"}
	}
	if m.GetIgnoreUriCase() {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, name := range sortedKeys(m.GetHeaders()) {
		h, err := headerMatcher(name, m.GetHeaders()[name], false)
		if err != nil {
			return nil, err
		}
		rm.Headers = append(rm.Headers, h)
	}
	for _, name := range sortedKeys(m.GetWithoutHeaders()) {
		h, err := headerMatcher(name, m.GetWithoutHeaders()[name], true)
		if err != nil {
			return nil, err
		}
		rm.Headers = append(rm.Headers, h)
	}
	for _, p := range []struct {
		name string
		s    *networking.StringMatch
	}{{":method", m.GetMethod()}, {":authority", m.GetAuthority()}, {":scheme", m.GetScheme()}} {
		if p.s == nil {
			continue
		}
		h, err := headerMatcher(p.name, p.s, false)
		if err != nil {
			return nil, err
		}
		rm.Headers = append(rm.Headers, h)
	}
	for _, name := range sortedKeys(m.GetQueryParams()) {
		sm, err := stringMatcher(m.GetQueryParams()[name], false)
		if err != nil {
			return nil, err
		}
		q := &route.QueryParameterMatcher{Name: name}
		if sm == nil {
			q.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			q.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_StringMatch{StringMatch: sm}
		}
		rm.QueryParameters = append(rm.QueryParameters, q)
	}
	return rm, nil
}

// destination resolves a route destination to its cluster name and
// service (nil when the host is not in the registry).
func (g *gen) destination(d *networking.Destination, vsNS string, ctxPort uint32) (string, *model.Service, uint32) {
	host := g.fqdn(d.GetHost(), vsNS)
	var svc *model.Service
	for _, s := range g.push.ServicesByHost(host) {
		if g.serviceVisible(s) {
			svc = s
			break
		}
	}
	port := d.GetPort().GetNumber()
	if port == 0 && svc != nil && len(svc.Ports) == 1 {
		port = svc.Ports[0].Port
	}
	if port == 0 {
		port = ctxPort
	}
	return ClusterName(Outbound, port, d.GetSubset(), host), svc, port
}

func (g *gen) translateHTTPRoute(vs *model.Config[*networking.VirtualService], hr *networking.HTTPRoute, m *networking.HTTPMatchRequest, ctx routeCtx) (*route.Route, error) {
	rm, err := routeMatch(m)
	if err != nil {
		return nil, err
	}
	if err := checkHeaderOps(hr.GetHeaders()); err != nil {
		return nil, err
	}
	for _, d := range hr.GetRoute() {
		if err := checkHeaderOps(d.GetHeaders()); err != nil {
			return nil, err
		}
	}
	r := &route.Route{Match: rm, Name: hr.GetName()}
	if m.GetName() != "" {
		if r.Name != "" {
			r.Name += "."
		}
		r.Name += m.GetName()
	}
	switch {
	case hr.GetRedirect() != nil:
		r.Action = &route.Route_Redirect{Redirect: redirect(hr.GetRedirect())}
	case hr.GetDirectResponse() != nil:
		dr := hr.GetDirectResponse()
		a := &route.DirectResponseAction{Status: dr.GetStatus()}
		if b := dr.GetBody(); b != nil {
			if s := b.GetString_(); s != "" {
				a.Body = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: s}}
			} else if len(b.GetBytes()) > 0 {
				a.Body = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b.GetBytes()}}
			}
		}
		r.Action = &route.Route_DirectResponse{DirectResponse: a}
	default:
		action, op, err := g.routeAction(vs, hr, ctx)
		if err != nil {
			return nil, err
		}
		// Like Istio: rewriting a prefix to "/" must not leave "//x" behind
		// ("/myapp/x" → "/x", "/myapp" → "/").
		if p := rm.GetPrefix(); action.PrefixRewrite == "/" && p != "" && p != "/" {
			action.PrefixRewrite = ""
			action.RegexRewrite = &matcher.RegexMatchAndSubstitute{
				Pattern:      &matcher.RegexMatcher{Regex: "^" + regexp.QuoteMeta(strings.TrimSuffix(p, "/")) + "/*"},
				Substitution: "/",
			}
		}
		r.Action = &route.Route_Route{Route: action}
		r.Decorator = &route.Decorator{Operation: op}
	}
	if h := hr.GetHeaders(); h != nil {
		r.RequestHeadersToAdd, r.RequestHeadersToRemove = headerOps(h.GetRequest())
		r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = headerOps(h.GetResponse())
	}
	if _, isRoute := r.Action.(*route.Route_Route); isRoute {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
		if f := hr.GetFault(); f != nil {
			hf, err := faultConfig(f)
			if err != nil {
				return nil, err
			}
			if hf != nil {
				r.TypedPerFilterConfig[FilterFault] = mustAny(hf)
			}
		}
		if c := hr.GetCorsPolicy(); c != nil {
			cp, err := corsConfig(c)
			if err != nil {
				return nil, err
			}
			r.TypedPerFilterConfig[FilterCORS] = mustAny(cp)
		}
		if len(r.TypedPerFilterConfig) == 0 {
			r.TypedPerFilterConfig = nil
		}
	}
	return r, nil
}

func (g *gen) routeAction(vs *model.Config[*networking.VirtualService], hr *networking.HTTPRoute, ctx routeCtx) (*route.RouteAction, string, error) {
	a := &route.RouteAction{Timeout: durationpb.New(0)}
	if t := hr.GetTimeout(); t != nil && t.AsDuration() >= 0 {
		a.Timeout = durationpb.New(t.AsDuration())
	}
	type dest struct {
		cluster string
		weight  uint32
		headers *networking.Headers
	}
	var dests []dest
	var op string
	var first *networking.Destination
	var firstSvc *model.Service
	var firstPort uint32
	for _, d := range hr.GetRoute() {
		if d.GetDestination() == nil || d.GetDestination().GetHost() == "" {
			return nil, "", fmt.Errorf("route destination without host")
		}
		if d.GetWeight() < 0 {
			return nil, "", fmt.Errorf("negative weight %d", d.GetWeight())
		}
		name, svc, port := g.destination(d.GetDestination(), vs.Namespace, ctx.port)
		if first == nil {
			first, firstSvc, firstPort = d.GetDestination(), svc, port
			op = g.fqdn(d.GetDestination().GetHost(), vs.Namespace) + ":" + portStr(port) + "/*"
		}
		if len(hr.GetRoute()) > 1 && d.GetWeight() == 0 {
			continue
		}
		dests = append(dests, dest{cluster: name, weight: uint32(d.GetWeight()), headers: d.GetHeaders()})
	}
	switch {
	case len(hr.GetRoute()) == 0:
		return nil, "", fmt.Errorf("http route has no destination, redirect or directResponse")
	case len(dests) == 0:
		return nil, "", fmt.Errorf("every destination has weight 0")
	case len(dests) == 1:
		a.ClusterSpecifier = &route.RouteAction_Cluster{Cluster: dests[0].cluster}
		if h := dests[0].headers; h != nil {
			// keep per-destination header changes with their destination
			a.ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: &route.WeightedCluster{Clusters: []*route.WeightedCluster_ClusterWeight{weightedClusterEntry(dests[0].cluster, 100, h)}}}
		}
	default:
		wc := &route.WeightedCluster{}
		for _, d := range dests {
			wc.Clusters = append(wc.Clusters, weightedClusterEntry(d.cluster, d.weight, d.headers))
		}
		a.ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if rw := hr.GetRewrite(); rw != nil {
		if rw.GetUri() != "" {
			a.PrefixRewrite = rw.GetUri()
		}
		if rr := rw.GetUriRegexRewrite(); rr != nil {
			if _, err := regexp.Compile(rr.GetMatch()); err != nil {
				return nil, "", fmt.Errorf("invalid uriRegexRewrite match %q: %w", rr.GetMatch(), err)
			}
			a.RegexRewrite = &matcher.RegexMatchAndSubstitute{Pattern: &matcher.RegexMatcher{Regex: rr.GetMatch()}, Substitution: rr.GetRewrite()}
			a.PrefixRewrite = ""
		}
		if rw.GetAuthority() != "" {
			a.HostRewriteSpecifier = &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.GetAuthority()}
		}
	}
	rp, err := retryPolicy(hr.GetRetries())
	if err != nil {
		return nil, "", err
	}
	a.RetryPolicy = rp
	var mirrors []*networking.HTTPMirrorPolicy
	if m := hr.GetMirror(); m != nil {
		pct := hr.GetMirrorPercentage()
		if pct == nil && hr.GetMirrorPercent() != nil {
			pct = &networking.Percent{Value: float64(hr.GetMirrorPercent().GetValue())}
		}
		mirrors = append(mirrors, &networking.HTTPMirrorPolicy{Destination: m, Percentage: pct})
	}
	mirrors = append(mirrors, hr.GetMirrors()...)
	for _, m := range mirrors {
		if m.GetDestination().GetHost() == "" {
			continue
		}
		name, _, _ := g.destination(m.GetDestination(), vs.Namespace, ctx.port)
		a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, &route.RouteAction_RequestMirrorPolicy{
			Cluster:         name,
			RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: fraction(m.GetPercentage(), 100)},
		})
	}
	if first != nil && firstSvc != nil {
		if ch := g.consistentHash(firstSvc.Hostname, firstSvc.Namespace, first.GetSubset(), firstPort); ch != nil {
			if hp := hashPolicy(ch); hp != nil {
				a.HashPolicy = []*route.RouteAction_HashPolicy{hp}
			}
		}
	}
	return a, op, nil
}

func weightedClusterEntry(name string, weight uint32, h *networking.Headers) *route.WeightedCluster_ClusterWeight {
	cw := &route.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(weight)}
	if h != nil {
		cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = headerOps(h.GetRequest())
		cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = headerOps(h.GetResponse())
	}
	return cw
}

// fraction converts an Istio percentage (0-100, fractional) to a
// FractionalPercent per million; nil is def percent.
func fraction(p *networking.Percent, def float64) *typev3.FractionalPercent {
	v := def
	if p != nil {
		v = p.GetValue()
	}
	if math.IsNaN(v) || v < 0 {
		v = 0
	}
	if v > 100 {
		v = 100
	}
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(v * 10000)), Denominator: typev3.FractionalPercent_MILLION}
}

func redirect(rd *networking.HTTPRedirect) *route.RedirectAction {
	a := &route.RedirectAction{HostRedirect: rd.GetAuthority(), PortRedirect: rd.GetPort()}
	switch {
	case rd.GetUri() != "":
		a.PathRewriteSpecifier = &route.RedirectAction_PathRedirect{PathRedirect: rd.GetUri()}
	case rd.GetPrefixRewrite() != "":
		a.PathRewriteSpecifier = &route.RedirectAction_PrefixRewrite{PrefixRewrite: rd.GetPrefixRewrite()}
	}
	if s := rd.GetScheme(); s != "" {
		a.SchemeRewriteSpecifier = &route.RedirectAction_SchemeRedirect{SchemeRedirect: s}
	}
	switch rd.GetRedirectCode() {
	case 302:
		a.ResponseCode = route.RedirectAction_FOUND
	case 303:
		a.ResponseCode = route.RedirectAction_SEE_OTHER
	case 307:
		a.ResponseCode = route.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		a.ResponseCode = route.RedirectAction_PERMANENT_REDIRECT
	default:
		a.ResponseCode = route.RedirectAction_MOVED_PERMANENTLY
	}
	return a
}

// checkHeaderOps refuses changes to pseudo headers other than setting
// :authority, which neither Envoy nor the proxy allow.
func checkHeaderOps(h *networking.Headers) error {
	for _, op := range []*networking.Headers_HeaderOperations{h.GetRequest(), h.GetResponse()} {
		names := append(append(sortedKeys(op.GetSet()), sortedKeys(op.GetAdd())...), op.GetRemove()...)
		for i, n := range names {
			if !strings.HasPrefix(n, ":") {
				continue
			}
			if strings.ToLower(n) == ":authority" && i < len(op.GetSet())+len(op.GetAdd()) && op == h.GetRequest() {
				continue
			}
			return fmt.Errorf("header %q cannot be changed", n)
		}
	}
	return nil
}

func headerOps(op *networking.Headers_HeaderOperations) ([]*core.HeaderValueOption, []string) {
	if op == nil {
		return nil, nil
	}
	var add []*core.HeaderValueOption
	for _, k := range sortedKeys(op.GetSet()) {
		add = append(add, &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: op.GetSet()[k]}, AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, k := range sortedKeys(op.GetAdd()) {
		add = append(add, &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: op.GetAdd()[k]}, AppendAction: core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return add, append([]string(nil), op.GetRemove()...)
}

// Envoy's retry_on names Istio accepts in retryOn.
// (docs/xds.md lists what the proxy implements).
var retryOnNames = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true,
	"retriable-4xx": true, "refused-stream": true, "retriable-status-codes": true,
	"cancelled": true, "deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true,
}

// pseudoHeaders are the pseudo headers a route may match or hash on.
var pseudoHeaders = map[string]bool{":method": true, ":authority": true, ":scheme": true, ":path": true}

// retryPolicy follows Istio: no retries block means 2 attempts on
// connection failures and 503; attempts 0 disables retries.
func retryPolicy(r *networking.HTTPRetry) (*route.RetryPolicy, error) {
	if r == nil {
		return &route.RetryPolicy{
			RetryOn:                       "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
			NumRetries:                    wrapperspb.UInt32(2),
			RetriableStatusCodes:          []uint32{503},
			RetryHostPredicate:            previousHosts(),
			HostSelectionRetryMaxAttempts: 5,
		}, nil
	}
	if r.GetAttempts() <= 0 {
		return nil, nil
	}
	p := &route.RetryPolicy{NumRetries: wrapperspb.UInt32(uint32(r.GetAttempts())), HostSelectionRetryMaxAttempts: 5}
	if v := r.GetRetryIgnorePreviousHosts(); v == nil || v.GetValue() {
		p.RetryHostPredicate = previousHosts()
	}
	if t := r.GetPerTryTimeout(); t != nil && t.AsDuration() > 0 {
		p.PerTryTimeout = durationpb.New(t.AsDuration())
	}
	if b := r.GetBackoff(); b != nil && b.AsDuration() > 0 {
		p.RetryBackOff = &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(b.AsDuration())}
	}
	on := r.GetRetryOn()
	if on == "" {
		on = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
		p.RetriableStatusCodes = []uint32{503}
	}
	var names []string
	seen := map[string]bool{}
	for _, part := range strings.Split(on, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if code, err := strconv.ParseUint(part, 10, 32); err == nil {
			if code < 100 || code > 599 {
				return nil, fmt.Errorf("retryOn status code %d out of range", code)
			}
			p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(code))
			part = "retriable-status-codes"
		} else if !retryOnNames[part] {
			return nil, fmt.Errorf("unknown retryOn %q", part)
		}
		if !seen[part] {
			seen[part] = true
			names = append(names, part)
		}
	}
	p.RetryOn = strings.Join(names, ",")
	return p, nil
}

var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
	"DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

func faultPercent(p *networking.Percent, legacy int32) *typev3.FractionalPercent {
	if p == nil && legacy > 0 {
		p = &networking.Percent{Value: float64(legacy)}
	}
	return fraction(p, 100)
}

func faultConfig(f *networking.HTTPFaultInjection) (*fault.HTTPFault, error) {
	hf := &fault.HTTPFault{}
	if d := f.GetDelay(); d != nil {
		fd := d.GetFixedDelay()
		if fd == nil || fd.AsDuration() < 0 {
			return nil, fmt.Errorf("fault delay needs a fixedDelay")
		}
		hf.Delay = &faultcommon.FaultDelay{
			FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(fd.AsDuration())},
			Percentage:         faultPercent(d.GetPercentage(), d.GetPercent()),
		}
	}
	if ab := f.GetAbort(); ab != nil {
		fa := &fault.FaultAbort{Percentage: faultPercent(ab.GetPercentage(), 0)}
		switch et := ab.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if et.HttpStatus < 200 || et.HttpStatus > 599 {
				return nil, fmt.Errorf("fault abort httpStatus %d out of range", et.HttpStatus)
			}
			fa.ErrorType = &fault.FaultAbort_HttpStatus{HttpStatus: uint32(et.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			code, ok := grpcCodes[strings.ToUpper(et.GrpcStatus)]
			if !ok {
				n, err := strconv.ParseUint(et.GrpcStatus, 10, 32)
				if err != nil || n > 16 {
					return nil, fmt.Errorf("fault abort grpcStatus %q is not a gRPC status", et.GrpcStatus)
				}
				code = uint32(n)
			}
			fa.ErrorType = &fault.FaultAbort_GrpcStatus{GrpcStatus: code}
		default:
			return nil, fmt.Errorf("fault abort needs httpStatus or grpcStatus")
		}
		hf.Abort = fa
	}
	if hf.Delay == nil && hf.Abort == nil {
		return nil, nil
	}
	return hf, nil
}

func corsConfig(c *networking.CorsPolicy) (*cors.CorsPolicy, error) {
	cp := &cors.CorsPolicy{
		AllowMethods:     strings.Join(c.GetAllowMethods(), ","),
		AllowHeaders:     strings.Join(c.GetAllowHeaders(), ","),
		ExposeHeaders:    strings.Join(c.GetExposeHeaders(), ","),
		AllowCredentials: c.GetAllowCredentials(),
	}
	for _, o := range c.GetAllowOrigin() {
		cp.AllowOriginStringMatch = append(cp.AllowOriginStringMatch, &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: o}})
	}
	for _, o := range c.GetAllowOrigins() {
		sm, err := stringMatcher(o, false)
		if err != nil {
			return nil, err
		}
		if sm == nil {
			sm = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".*"}}}
		}
		cp.AllowOriginStringMatch = append(cp.AllowOriginStringMatch, sm)
	}
	if d := c.GetMaxAge(); d != nil && d.AsDuration() > 0 {
		cp.MaxAge = strconv.FormatInt(int64(d.AsDuration().Seconds()), 10)
	}
	return cp, nil
}

func hashPolicy(ch *networking.LoadBalancerSettings_ConsistentHashLB) *route.RouteAction_HashPolicy {
	switch {
	case ch.GetHttpHeaderName() != "":
		if n := strings.ToLower(ch.GetHttpHeaderName()); strings.HasPrefix(n, ":") && (n == ":scheme" || !pseudoHeaders[n]) {
			return nil
		}
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(ch.GetHttpHeaderName())}}}
	case ch.GetHttpCookie() != nil && ch.GetHttpCookie().GetName() != "":
		c := ch.GetHttpCookie()
		hc := &route.RouteAction_HashPolicy_Cookie{Name: c.GetName(), Path: c.GetPath()}
		if c.GetTtl() != nil {
			hc.Ttl = durationpb.New(c.GetTtl().AsDuration())
		}
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: hc}}
	case ch.GetUseSourceIp():
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
	case ch.GetHttpQueryParameterName() != "":
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &route.RouteAction_HashPolicy_QueryParameter{Name: ch.GetHttpQueryParameterName()}}}
	}
	return nil
}

// defaultRoute sends everything to the service's cluster on the port.
func (g *gen) defaultRoute(svc *model.Service, port uint32) *route.Route {
	a := &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: ClusterName(Outbound, port, "", svc.Hostname)},
		Timeout:          durationpb.New(0),
	}
	a.RetryPolicy, _ = retryPolicy(nil)
	if ch := g.consistentHash(svc.Hostname, svc.Namespace, "", port); ch != nil {
		if hp := hashPolicy(ch); hp != nil {
			a.HashPolicy = []*route.RouteAction_HashPolicy{hp}
		}
	}
	return &route.Route{
		Name:      "default",
		Match:     &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action:    &route.Route_Route{Route: a},
		Decorator: &route.Decorator{Operation: svc.Hostname + ":" + portStr(port) + "/*"},
	}
}

// previousHosts makes retries pick another endpoint (Istio's default).
// The predicate is named only: its config (PreviousHostsPredicate) has no
// fields, and the extension is found by name, so the typed_config Istio
// adds would only put its 88-byte type URL into every route of every
// route configuration (over a quarter of a default route's size).
func previousHosts() []*route.RetryPolicy_RetryHostPredicate {
	return []*route.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}
}
