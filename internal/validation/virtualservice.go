package validation

import (
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const meshGateway = "mesh"

func validateVirtualService(m proto.Message, _ objectMeta, e *errorList) {
	vs := m.(*networking.VirtualService)
	p := field.NewPath("spec")
	// A VirtualService without hosts is a delegate: other VirtualServices
	// include its routes, so it cannot bind to gateways itself.
	delegate := len(vs.Hosts) == 0
	if delegate && len(vs.Gateways) > 0 {
		e.add(p.Child("hosts"), "hosts are required when gateways are set (a VirtualService without hosts is a delegate)")
	}
	appliesToMesh := len(vs.Gateways) == 0 || slices.Contains(vs.Gateways, meshGateway)
	for i, h := range vs.Hosts {
		hp := p.Child("hosts").Index(i)
		if h == "*" && appliesToMesh {
			e.add(hp, "wildcard host \"*\" is not allowed for a VirtualService bound to the mesh gateway")
			continue
		}
		checkHost(hp, h, true, e)
	}
	for i, g := range vs.Gateways {
		checkGatewayName(p.Child("gateways").Index(i), g, e)
	}
	checkExportTo(p.Child("exportTo"), vs.ExportTo, e)
	if len(vs.Http) == 0 && len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
		e.add(p, "at least one of http, tcp or tls routes is required")
	}
	for i, r := range vs.Http {
		checkHTTPRoute(p.Child("http").Index(i), r, delegate, e)
	}
	for i, r := range vs.Tls {
		rp := p.Child("tls").Index(i)
		if len(r.Match) == 0 {
			e.add(rp.Child("match"), "a tls route needs at least one match")
		}
		for j, m := range r.Match {
			mp := rp.Child("match").Index(j)
			if len(m.SniHosts) == 0 {
				e.add(mp.Child("sniHosts"), "sniHosts are required")
			}
			for k, h := range m.SniHosts {
				checkHost(mp.Child("sniHosts").Index(k), h, true, e)
			}
			for k, s := range m.DestinationSubnets {
				checkIPOrCIDR(mp.Child("destinationSubnets").Index(k), s, e)
			}
			checkOptionalPort(mp.Child("port"), m.Port, e)
			checkLabels(mp.Child("sourceLabels"), m.SourceLabels, e)
			for k, g := range m.Gateways {
				checkGatewayName(mp.Child("gateways").Index(k), g, e)
			}
		}
		checkRouteDestinations(rp.Child("route"), r.Route, e)
	}
	for i, r := range vs.Tcp {
		rp := p.Child("tcp").Index(i)
		for j, m := range r.Match {
			mp := rp.Child("match").Index(j)
			for k, s := range m.DestinationSubnets {
				checkIPOrCIDR(mp.Child("destinationSubnets").Index(k), s, e)
			}
			if m.SourceSubnet != "" {
				checkIPOrCIDR(mp.Child("sourceSubnet"), m.SourceSubnet, e)
			}
			checkOptionalPort(mp.Child("port"), m.Port, e)
			checkLabels(mp.Child("sourceLabels"), m.SourceLabels, e)
			for k, g := range m.Gateways {
				checkGatewayName(mp.Child("gateways").Index(k), g, e)
			}
		}
		checkRouteDestinations(rp.Child("route"), r.Route, e)
	}
}

// checkGatewayName checks a gateway reference: "mesh", "name" or
// "namespace/name".
func checkGatewayName(p *field.Path, g string, e *errorList) {
	if g == meshGateway {
		return
	}
	ns, name, found := strings.Cut(g, "/")
	if !found {
		name = ns
	} else if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		e.add(p, "invalid namespace in gateway %q: %s", g, errs[0])
		return
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		e.add(p, "invalid gateway name %q: %s", g, errs[0])
	}
}

func checkHTTPRoute(p *field.Path, r *networking.HTTPRoute, delegate bool, e *errorList) {
	set := 0
	var which []string
	if len(r.Route) > 0 {
		set++
		which = append(which, "route")
	}
	if r.Redirect != nil {
		set++
		which = append(which, "redirect")
	}
	if r.DirectResponse != nil {
		set++
		which = append(which, "directResponse")
	}
	if r.Delegate != nil {
		set++
		which = append(which, "delegate")
	}
	switch {
	case set == 0:
		e.add(p, "one of route, redirect, directResponse or delegate is required")
	case set > 1:
		e.add(p, "only one of route, redirect, directResponse or delegate may be set, not %s", strings.Join(which, " and "))
	}
	if r.Delegate != nil {
		dp := p.Child("delegate")
		if delegate {
			e.add(dp, "a delegate VirtualService cannot delegate again")
		}
		checkName(dp.Child("name"), "delegate name", r.Delegate.Name, e)
		if r.Delegate.Namespace != "" {
			checkName(dp.Child("namespace"), "delegate namespace", r.Delegate.Namespace, e)
		}
	}
	if r.Redirect != nil {
		rp := p.Child("redirect")
		if r.Rewrite != nil {
			e.add(p.Child("rewrite"), "rewrite cannot be combined with redirect")
		}
		rd := r.Redirect
		if rd.Uri == "" && rd.Authority == "" && rd.Scheme == "" && rd.PrefixRewrite == "" && rd.RedirectPort == nil && rd.RedirectCode == 0 {
			e.add(rp, "redirect must set at least one of uri, authority, scheme, port, derivePort or redirectCode")
		}
		if rd.RedirectCode != 0 && (rd.RedirectCode < 300 || rd.RedirectCode > 399) {
			e.add(rp.Child("redirectCode"), "redirect code %d must be a 3xx status", rd.RedirectCode)
		}
		if pp, ok := rd.RedirectPort.(*networking.HTTPRedirect_Port); ok {
			checkPort(rp.Child("port"), pp.Port, e)
		}
		if rd.Uri != "" && rd.PrefixRewrite != "" {
			e.add(rp, "only one of uri and prefixRewrite may be set")
		}
	}
	if dr := r.DirectResponse; dr != nil {
		if dr.Status < 200 || dr.Status > 599 {
			e.add(p.Child("directResponse", "status"), "status %d must be between 200 and 599", dr.Status)
		}
	}
	if rw := r.Rewrite; rw != nil {
		rp := p.Child("rewrite")
		if rw.Uri != "" && rw.UriRegexRewrite != nil {
			e.add(rp, "only one of uri and uriRegexRewrite may be set")
		}
		if rw.UriRegexRewrite != nil {
			checkRegex(rp.Child("uriRegexRewrite", "match"), rw.UriRegexRewrite.Match, e)
		}
		if rw.Uri == "" && rw.Authority == "" && rw.UriRegexRewrite == nil {
			e.add(rp, "rewrite must set uri, uriRegexRewrite or authority")
		}
	}
	for i, m := range r.Match {
		checkHTTPMatch(p.Child("match").Index(i), m, e)
	}
	checkHTTPRouteDestinations(p.Child("route"), r.Route, e)
	if r.Retries != nil {
		rp := p.Child("retries")
		if r.Retries.Attempts < 0 {
			e.add(rp.Child("attempts"), "attempts %d must not be negative", r.Retries.Attempts)
		}
		if r.Retries.RetryOn != "" {
			checkRetryOn(rp.Child("retryOn"), r.Retries.RetryOn, e)
		}
	}
	if f := r.Fault; f != nil {
		fp := p.Child("fault")
		if f.Delay == nil && f.Abort == nil {
			e.add(fp, "fault must set delay or abort")
		}
		if d := f.Delay; d != nil {
			dp := fp.Child("delay")
			if d.HttpDelayType == nil {
				e.add(dp, "one of fixedDelay or exponentialDelay is required")
			}
			if d.Percent < 0 || d.Percent > 100 {
				e.add(dp.Child("percent"), "percentage %d must be between 0 and 100", d.Percent)
			}
			if d.Percentage != nil {
				checkPercent(dp.Child("percentage", "value"), d.Percentage.Value, e)
			}
		}
		if a := f.Abort; a != nil {
			ap := fp.Child("abort")
			switch t := a.ErrorType.(type) {
			case nil:
				e.add(ap, "one of httpStatus, grpcStatus or http2Error is required")
			case *networking.HTTPFaultInjection_Abort_HttpStatus:
				if t.HttpStatus < 200 || t.HttpStatus > 599 {
					e.add(ap.Child("httpStatus"), "HTTP status %d must be between 200 and 599", t.HttpStatus)
				}
			case *networking.HTTPFaultInjection_Abort_GrpcStatus:
				if !slices.Contains(grpcStatuses, t.GrpcStatus) {
					e.add(ap.Child("grpcStatus"), "unknown gRPC status %q, must be one of %s", t.GrpcStatus, strings.Join(grpcStatuses, ", "))
				}
			}
			if a.Percentage != nil {
				checkPercent(ap.Child("percentage", "value"), a.Percentage.Value, e)
			}
		}
	}
	if r.Mirror != nil && len(r.Mirrors) > 0 {
		e.add(p.Child("mirrors"), "only one of mirror and mirrors may be set")
	}
	if r.Mirror != nil {
		checkDestination(p.Child("mirror"), r.Mirror, e)
	}
	if r.MirrorPercent != nil && r.MirrorPercent.Value > 100 {
		e.add(p.Child("mirrorPercent"), "percentage %d must be between 0 and 100", r.MirrorPercent.Value)
	}
	if r.MirrorPercentage != nil {
		checkPercent(p.Child("mirrorPercentage", "value"), r.MirrorPercentage.Value, e)
	}
	for i, m := range r.Mirrors {
		mp := p.Child("mirrors").Index(i)
		if m.Destination == nil {
			e.add(mp.Child("destination"), "destination is required")
		} else {
			checkDestination(mp.Child("destination"), m.Destination, e)
		}
		if m.Percentage != nil {
			checkPercent(mp.Child("percentage", "value"), m.Percentage.Value, e)
		}
	}
	if c := r.CorsPolicy; c != nil {
		cp := p.Child("corsPolicy")
		for i, o := range c.AllowOrigins {
			checkStringMatch(cp.Child("allowOrigins").Index(i), o, e)
		}
		for i, h := range c.AllowHeaders {
			checkHeaderNameAnyCase(cp.Child("allowHeaders").Index(i), h, e)
		}
		for i, h := range c.ExposeHeaders {
			checkHeaderNameAnyCase(cp.Child("exposeHeaders").Index(i), h, e)
		}
		for i, m := range c.AllowMethods {
			if m != "*" && !slices.Contains(httpMethods, strings.ToUpper(m)) {
				e.add(cp.Child("allowMethods").Index(i), "unknown HTTP method %q", m)
			}
		}
	}
	checkHeaders(p.Child("headers"), r.Headers, e)
}

func checkHeaderNameAnyCase(p *field.Path, name string, e *errorList) {
	if name == "*" {
		return
	}
	checkHeaderName(p, strings.ToLower(name), e)
}

func checkHeaders(p *field.Path, h *networking.Headers, e *errorList) {
	if h == nil {
		return
	}
	for _, op := range []struct {
		name string
		ops  *networking.Headers_HeaderOperations
	}{{"request", h.Request}, {"response", h.Response}} {
		if op.ops == nil {
			continue
		}
		op := op
		hp := p.Child(op.name)
		for _, k := range sortedKeys(op.ops.Set) {
			checkHeaderName(hp.Child("set").Key(k), strings.ToLower(k), e)
		}
		for _, k := range sortedKeys(op.ops.Add) {
			checkHeaderName(hp.Child("add").Key(k), strings.ToLower(k), e)
		}
		for i, k := range op.ops.Remove {
			checkHeaderName(hp.Child("remove").Index(i), strings.ToLower(k), e)
		}
	}
}

func checkHTTPMatch(p *field.Path, m *networking.HTTPMatchRequest, e *errorList) {
	for _, sm := range []struct {
		name string
		m    *networking.StringMatch
	}{{"uri", m.Uri}, {"scheme", m.Scheme}, {"method", m.Method}, {"authority", m.Authority}} {
		if sm.m != nil {
			checkStringMatch(p.Child(sm.name), sm.m, e)
		}
	}
	for _, k := range sortedKeys(m.Headers) {
		hp := p.Child("headers").Key(k)
		checkMatchHeaderName(hp, k, e)
		if m.Headers[k] != nil {
			checkStringMatch(hp, m.Headers[k], e)
		}
	}
	for _, k := range sortedKeys(m.WithoutHeaders) {
		hp := p.Child("withoutHeaders").Key(k)
		checkMatchHeaderName(hp, k, e)
		if m.WithoutHeaders[k] != nil {
			checkStringMatch(hp, m.WithoutHeaders[k], e)
		}
	}
	for _, k := range sortedKeys(m.QueryParams) {
		qp := p.Child("queryParams").Key(k)
		if k == "" {
			e.add(qp, "query parameter name must not be empty")
		}
		if m.QueryParams[k] != nil {
			checkStringMatch(qp, m.QueryParams[k], e)
		}
	}
	checkOptionalPort(p.Child("port"), m.Port, e)
	checkLabels(p.Child("sourceLabels"), m.SourceLabels, e)
	for i, g := range m.Gateways {
		checkGatewayName(p.Child("gateways").Index(i), g, e)
	}
	if m.SourceNamespace != "" {
		checkName(p.Child("sourceNamespace"), "namespace", m.SourceNamespace, e)
	}
}

// jwtClaimPrefix starts a header match key that routes on a JWT claim.
const jwtClaimPrefix = "@request.auth.claims."

// checkMatchHeaderName checks the key of a header match: a header name in
// any case (matching ignores case), or a JWT claim ("@request.auth.claims.groups").
func checkMatchHeaderName(p *field.Path, name string, e *errorList) {
	if claim, ok := strings.CutPrefix(name, jwtClaimPrefix); ok {
		if claim == "" {
			e.add(p, "%q needs a claim name", name)
		}
		return
	}
	checkHeaderName(p, strings.ToLower(name), e)
}

// checkStringMatch checks the regular expression of a string match. An
// empty match ({}) is accepted as Istio accepts it: for headers and query
// parameters it matches presence, for the URI any path.
func checkStringMatch(p *field.Path, m *networking.StringMatch, e *errorList) {
	if t, ok := m.MatchType.(*networking.StringMatch_Regex); ok {
		checkRegex(p.Child("regex"), t.Regex, e)
	}
}

// checkWeights checks that the weights of a route's destinations add up to
// 100, unless there is a single destination without a weight.
func checkWeights(p *field.Path, weights []int32, e *errorList) {
	if len(weights) == 0 {
		e.add(p, "at least one destination is required")
		return
	}
	var sum int64
	for i, w := range weights {
		if w < 0 {
			e.add(p.Index(i).Child("weight"), "weight %d must not be negative", w)
			return
		}
		sum += int64(w)
	}
	if len(weights) == 1 && weights[0] == 0 {
		return
	}
	if sum != 100 {
		e.add(p.Index(len(weights)-1).Child("weight"), "weights sum to %d, must be 100", sum)
	}
}

func checkHTTPRouteDestinations(p *field.Path, rs []*networking.HTTPRouteDestination, e *errorList) {
	if len(rs) == 0 {
		return
	}
	weights := make([]int32, len(rs))
	for i, r := range rs {
		weights[i] = r.Weight
		rp := p.Index(i)
		if r.Destination == nil {
			e.add(rp.Child("destination"), "destination is required")
		} else {
			checkDestination(rp.Child("destination"), r.Destination, e)
		}
		checkHeaders(rp.Child("headers"), r.Headers, e)
	}
	checkWeights(p, weights, e)
}

func checkRouteDestinations(p *field.Path, rs []*networking.RouteDestination, e *errorList) {
	weights := make([]int32, len(rs))
	for i, r := range rs {
		weights[i] = r.Weight
		rp := p.Index(i)
		if r.Destination == nil {
			e.add(rp.Child("destination"), "destination is required")
		} else {
			checkDestination(rp.Child("destination"), r.Destination, e)
		}
	}
	checkWeights(p, weights, e)
}

func checkDestination(p *field.Path, d *networking.Destination, e *errorList) {
	if d.Host == "" {
		e.add(p.Child("host"), "host is required")
	} else {
		checkHost(p.Child("host"), d.Host, false, e)
	}
	if d.Subset != "" {
		checkName(p.Child("subset"), "subset name", d.Subset, e)
	}
	if d.Port != nil {
		checkPort(p.Child("port", "number"), d.Port.Number, e)
	}
}

// retryPolicies are the retryOn conditions Envoy and the mesh proxy know,
// besides HTTP status codes.
var retryPolicies = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
	"retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

func checkRetryOn(p *field.Path, v string, e *errorList) {
	for _, c := range strings.Split(v, ",") {
		c = strings.TrimSpace(c)
		if slices.Contains(retryPolicies, c) {
			continue
		}
		if code, err := strconv.Atoi(c); err == nil && code >= 100 && code <= 599 {
			continue
		}
		e.add(p, "unknown retry condition %q", c)
	}
}

var grpcStatuses = []string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
