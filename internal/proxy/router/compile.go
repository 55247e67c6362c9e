// Package router is the proxy's HTTP routing engine: it compiles an xDS
// RouteConfiguration into a Table (Compile) and serves requests with it
// (NewHandler), forwarding them to the clusters of internal/proxy/upstream
// with Envoy's route semantics as described in docs/xds.md.
//
// Per request the handler: picks the virtual host (exact, suffix and
// prefix wildcards, "*") and the first matching route; applies the
// route's (else the virtual host's) fault and CORS policies in the HTTP
// filter order of docs/xds.md; then redirects, answers directly, or
// forwards. Forwarding strips hop-by-hop headers, sets x-request-id,
// x-forwarded-proto, x-envoy-attempt-count and
// x-envoy-expected-rq-timeout-ms, applies header mutations from the most
// specific level to the least (weighted cluster, route, virtual host,
// route configuration), rewrites path and authority, mirrors, hashes for
// consistent hashing, and retries with jittered back-off while the
// request body fits the buffer limit. Responses stream (headers first,
// flushes for unknown lengths, trailers kept). Local replies use Envoy's
// status codes, bodies and response flags; gRPC requests get a gRPC status
// instead.
package router

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// DefaultTimeout is Envoy's route timeout when none is configured.
const DefaultTimeout = 15 * time.Second

// Table is a compiled RouteConfiguration. It is immutable and safe for
// concurrent use.
type Table struct {
	name       string
	ignorePort bool
	exact      map[string]*virtualHost
	suffixes   []wildcardHost // "*.example.com", longest first
	prefixes   []wildcardHost // "example.*", longest first
	catchAll   *virtualHost
	reqHeaders headerMutation
	resHeaders headerMutation
}

type wildcardHost struct {
	affix string
	vh    *virtualHost
}

type virtualHost struct {
	name string
	// attemptCountInResponse: include_attempt_count_in_response.
	attemptCountInResponse bool
	bufferLimit            int // 0: the handler's default
	routes                 []*route
	reqHeaders             headerMutation
	resHeaders             headerMutation
	filters                filterConfigs
	retry                  *retryPolicy
	mirrors                []mirrorPolicy
}

// filterConfigs are the typed_per_filter_config this router implements.
type filterConfigs struct {
	fault *faultPolicy
	cors  *corsPolicy
}

type actionKind uint8

const (
	actionRoute actionKind = iota
	actionRedirect
	actionDirect
)

type route struct {
	name       string
	vh         *virtualHost
	match      routeMatch
	kind       actionKind
	action     *routeAction
	redirect   *redirectAction
	direct     *directResponse
	reqHeaders headerMutation
	resHeaders headerMutation
	filters    filterConfigs
	operation  string
	// bufferLimit is the route's request body buffer limit (0: the
	// virtual host's).
	bufferLimit int
}

type routeAction struct {
	cluster       string
	clusterHeader string
	weighted      []weightedCluster
	totalWeight   uint64
	prefixRewrite string
	regexRewrite  *regexRewrite
	hostLiteral   string
	hostHeader    string
	timeout       time.Duration // 0: none
	maxStream     time.Duration // 0: none
	grpcHeaderMax *time.Duration
	retry         *retryPolicy
	mirrors       []mirrorPolicy
	hash          []hashPolicy
	upgrades      map[string]bool // upgrade type (lower case) → enabled
	notFoundCode  int
}

type weightedCluster struct {
	name        string
	weight      uint64
	reqHeaders  headerMutation
	resHeaders  headerMutation
	hostLiteral string
}

type regexRewrite struct {
	re  *regexp.Regexp
	sub string // in Go's Expand syntax
}

type directResponse struct {
	status int
	body   string
}

type redirectAction struct {
	scheme        string
	host          string
	port          uint32
	path          string
	prefixRewrite *string
	regexRewrite  *regexRewrite
	code          int
	stripQuery    bool
}

type mirrorPolicy struct {
	cluster     string
	numerator   uint64
	denominator uint64
	noSuffix    bool
}

// Compile converts a RouteConfiguration. Any field that this router does
// not implement and that would change routing is an error (the xDS client
// NACKs it).
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	if rc == nil {
		return nil, fmt.Errorf("nil route configuration")
	}
	t := &Table{name: rc.GetName(), ignorePort: rc.GetIgnorePortInHostMatching(), exact: map[string]*virtualHost{}}
	switch {
	case len(rc.GetClusterSpecifierPlugins()) > 0:
		return nil, fmt.Errorf("route %q: cluster_specifier_plugins are not supported", t.name)
	case rc.GetVhds() != nil:
		return nil, fmt.Errorf("route %q: vhds is not supported", t.name)
	case len(rc.GetTypedPerFilterConfig()) > 0:
		return nil, fmt.Errorf("route %q: route-configuration-level typed_per_filter_config is not supported", t.name)
	case len(rc.GetInternalOnlyHeaders()) > 0:
		return nil, fmt.Errorf("route %q: internal_only_headers is not supported", t.name)
	}
	var err error
	if t.reqHeaders, err = compileMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("route %q: request headers: %w", t.name, err)
	}
	if t.resHeaders, err = compileMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("route %q: response headers: %w", t.name, err)
	}
	for _, v := range rc.GetVirtualHosts() {
		vh, err := compileVirtualHost(v)
		if err != nil {
			return nil, fmt.Errorf("route %q: virtual host %q: %w", t.name, v.GetName(), err)
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if t.catchAll != nil {
					return nil, fmt.Errorf("route %q: domain \"*\" is in more than one virtual host", t.name)
				}
				t.catchAll = vh
			case strings.HasPrefix(d, "*"):
				if dupWildcard(t.suffixes, d[1:]) {
					return nil, fmt.Errorf("route %q: domain %q is in more than one virtual host", t.name, d)
				}
				t.suffixes = append(t.suffixes, wildcardHost{affix: d[1:], vh: vh})
			case strings.HasSuffix(d, "*"):
				if dupWildcard(t.prefixes, d[:len(d)-1]) {
					return nil, fmt.Errorf("route %q: domain %q is in more than one virtual host", t.name, d)
				}
				t.prefixes = append(t.prefixes, wildcardHost{affix: d[:len(d)-1], vh: vh})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("route %q: domain %q: a wildcard must be at the start or the end", t.name, d)
			case d == "":
				return nil, fmt.Errorf("route %q: empty domain", t.name)
			default:
				if _, dup := t.exact[d]; dup {
					return nil, fmt.Errorf("route %q: domain %q is in more than one virtual host", t.name, d)
				}
				t.exact[d] = vh
			}
		}
	}
	longestFirst := func(w []wildcardHost) {
		sort.SliceStable(w, func(i, j int) bool { return len(w[i].affix) > len(w[j].affix) })
	}
	longestFirst(t.suffixes)
	longestFirst(t.prefixes)
	return t, nil
}

func bufferLimit(old interface{ GetValue() uint32 }, cur interface{ GetValue() uint64 }) int {
	if v := cur.GetValue(); v > 0 {
		return int(min(v, 1<<30))
	}
	return int(old.GetValue())
}

func dupWildcard(ws []wildcardHost, affix string) bool {
	for _, w := range ws {
		if w.affix == affix {
			return true
		}
	}
	return false
}

// Name is the RouteConfiguration's name.
func (t *Table) Name() string { return t.name }

// virtualHostFor matches a Host header to a virtual host like Envoy:
// exact domains, then suffix wildcards, then prefix wildcards (longest
// first), then "*".
func (t *Table) virtualHostFor(host string) *virtualHost {
	host = strings.ToLower(host)
	if t.ignorePort {
		host = stripPort(host)
	}
	if vh := t.exact[host]; vh != nil {
		return vh
	}
	for _, w := range t.suffixes {
		// The wildcard matches at least one character.
		if len(host) > len(w.affix) && strings.HasSuffix(host, w.affix) {
			return w.vh
		}
	}
	for _, w := range t.prefixes {
		if len(host) > len(w.affix) && strings.HasPrefix(host, w.affix) {
			return w.vh
		}
	}
	return t.catchAll
}

func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.LastIndex(host, "]"); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.Count(host, ":") == 1 {
		if _, err := strconv.Atoi(host[i+1:]); err == nil {
			return host[:i]
		}
	}
	return host
}

func compileVirtualHost(v *routev3.VirtualHost) (*virtualHost, error) {
	switch {
	case v.GetMatcher() != nil:
		return nil, fmt.Errorf("matcher is not supported")
	case v.GetRequireTls() != routev3.VirtualHost_NONE:
		return nil, fmt.Errorf("require_tls is not supported")
	case len(v.GetRateLimits()) > 0:
		return nil, fmt.Errorf("rate_limits are not supported")
	case v.GetCors() != nil:
		return nil, fmt.Errorf("cors (deprecated field) is not supported: use typed_per_filter_config")
	case v.GetHedgePolicy() != nil:
		return nil, fmt.Errorf("hedge_policy is not supported")
	case v.GetRetryPolicyTypedConfig() != nil:
		return nil, fmt.Errorf("retry_policy_typed_config is not supported")
	}
	vh := &virtualHost{name: v.GetName(), attemptCountInResponse: v.GetIncludeAttemptCountInResponse(), bufferLimit: bufferLimit(v.GetPerRequestBufferLimitBytes(), v.GetRequestBodyBufferLimit())}
	var err error
	if vh.reqHeaders, err = compileMutation(v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("request headers: %w", err)
	}
	if vh.resHeaders, err = compileMutation(v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("response headers: %w", err)
	}
	if vh.filters, err = compileFilterConfigs(v.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	if v.GetRetryPolicy() != nil {
		if vh.retry, err = compileRetry(v.GetRetryPolicy()); err != nil {
			return nil, err
		}
	}
	if vh.mirrors, err = compileMirrors(v.GetRequestMirrorPolicies()); err != nil {
		return nil, err
	}
	for i, r := range v.GetRoutes() {
		rt, err := compileRoute(r, vh)
		if err != nil {
			name := r.GetName()
			if name == "" {
				name = "#" + strconv.Itoa(i)
			}
			return nil, fmt.Errorf("route %s: %w", name, err)
		}
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func compileRoute(r *routev3.Route, vh *virtualHost) (*route, error) {
	rt := &route{name: r.GetName(), vh: vh, operation: r.GetDecorator().GetOperation(), bufferLimit: bufferLimit(r.GetPerRequestBufferLimitBytes(), r.GetRequestBodyBufferLimit())}
	var err error
	if rt.match, err = compileRouteMatch(r.GetMatch()); err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	if rt.reqHeaders, err = compileMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("request headers: %w", err)
	}
	if rt.resHeaders, err = compileMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("response headers: %w", err)
	}
	if rt.filters, err = compileFilterConfigs(r.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		rt.kind = actionRoute
		rt.action, err = compileRouteAction(a.Route, vh)
	case *routev3.Route_Redirect:
		rt.kind = actionRedirect
		rt.redirect, err = compileRedirect(a.Redirect)
	case *routev3.Route_DirectResponse:
		rt.kind = actionDirect
		rt.direct, err = compileDirect(a.DirectResponse)
	default:
		err = fmt.Errorf("action %T is not supported", a)
	}
	return rt, err
}

func compileRouteAction(a *routev3.RouteAction, vh *virtualHost) (*routeAction, error) {
	ra := &routeAction{timeout: DefaultTimeout, upgrades: map[string]bool{}, notFoundCode: 503}
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if c.Cluster == "" {
			return nil, fmt.Errorf("empty cluster")
		}
		ra.cluster = c.Cluster
	case *routev3.RouteAction_ClusterHeader:
		ra.clusterHeader = c.ClusterHeader
	case *routev3.RouteAction_WeightedClusters:
		if err := compileWeighted(ra, c.WeightedClusters); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("cluster specifier %T is not supported", c)
	}
	if a.GetClusterNotFoundResponseCode() == routev3.RouteAction_NOT_FOUND {
		ra.notFoundCode = 404
	} else if a.GetClusterNotFoundResponseCode() == routev3.RouteAction_INTERNAL_SERVER_ERROR {
		ra.notFoundCode = 500
	}
	switch {
	case a.GetMetadataMatch() != nil:
		return nil, fmt.Errorf("metadata_match is not supported")
	case a.GetPathRewritePolicy() != nil:
		return nil, fmt.Errorf("path_rewrite_policy is not supported")
	case a.GetPathRewrite() != "":
		return nil, fmt.Errorf("path_rewrite is not supported")
	case a.GetIdleTimeout() != nil:
		return nil, fmt.Errorf("idle_timeout is not supported")
	case a.GetRetryPolicyTypedConfig() != nil:
		return nil, fmt.Errorf("retry_policy_typed_config is not supported")
	case len(a.GetRateLimits()) > 0:
		return nil, fmt.Errorf("rate_limits are not supported")
	case a.GetCors() != nil:
		return nil, fmt.Errorf("cors (deprecated field) is not supported: use typed_per_filter_config")
	case a.GetInternalRedirectPolicy() != nil || a.GetInternalRedirectAction() != routev3.RouteAction_PASS_THROUGH_INTERNAL_REDIRECT:
		return nil, fmt.Errorf("internal redirects are not supported")
	case a.GetHedgePolicy() != nil:
		return nil, fmt.Errorf("hedge_policy is not supported")
	case a.GetMaxGrpcTimeout() != nil || a.GetGrpcTimeoutOffset() != nil:
		return nil, fmt.Errorf("max_grpc_timeout is deprecated and not supported: use max_stream_duration")
	case a.GetAppendXForwardedHost():
		return nil, fmt.Errorf("append_x_forwarded_host is not supported")
	case a.GetEarlyDataPolicy() != nil:
		return nil, fmt.Errorf("early_data_policy is not supported")
	}
	ra.prefixRewrite = a.GetPrefixRewrite()
	if rr := a.GetRegexRewrite(); rr != nil {
		var err error
		if ra.regexRewrite, err = compileRegexRewrite(rr); err != nil {
			return nil, fmt.Errorf("regex_rewrite: %w", err)
		}
	}
	if ra.prefixRewrite != "" && ra.regexRewrite != nil {
		return nil, fmt.Errorf("prefix_rewrite and regex_rewrite are exclusive")
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case nil:
	case *routev3.RouteAction_HostRewriteLiteral:
		ra.hostLiteral = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		if h.AutoHostRewrite.GetValue() {
			return nil, fmt.Errorf("auto_host_rewrite is not supported")
		}
	case *routev3.RouteAction_HostRewriteHeader:
		ra.hostHeader = canonical(h.HostRewriteHeader)
	default:
		return nil, fmt.Errorf("host rewrite %T is not supported", h)
	}
	if d := a.GetTimeout(); d != nil {
		ra.timeout = d.AsDuration()
	}
	if ms := a.GetMaxStreamDuration(); ms != nil {
		if ms.GetGrpcTimeoutHeaderOffset() != nil {
			return nil, fmt.Errorf("max_stream_duration.grpc_timeout_header_offset is not supported")
		}
		if d := ms.GetMaxStreamDuration(); d != nil {
			ra.maxStream = d.AsDuration()
		}
		if d := ms.GetGrpcTimeoutHeaderMax(); d != nil {
			v := d.AsDuration()
			ra.grpcHeaderMax = &v
		}
	}
	var err error
	if a.GetRetryPolicy() != nil {
		if ra.retry, err = compileRetry(a.GetRetryPolicy()); err != nil {
			return nil, err
		}
	} else {
		ra.retry = vh.retry
	}
	if ra.mirrors, err = compileMirrors(a.GetRequestMirrorPolicies()); err != nil {
		return nil, err
	}
	if len(ra.mirrors) == 0 {
		ra.mirrors = vh.mirrors
	}
	if ra.hash, err = compileHashPolicies(a.GetHashPolicy()); err != nil {
		return nil, err
	}
	for _, u := range a.GetUpgradeConfigs() {
		if u.GetConnectConfig() != nil {
			return nil, fmt.Errorf("upgrade_configs: CONNECT is not supported")
		}
		enabled := true
		if u.GetEnabled() != nil {
			enabled = u.GetEnabled().GetValue()
		}
		ra.upgrades[strings.ToLower(u.GetUpgradeType())] = enabled
	}
	return ra, nil
}

func compileWeighted(ra *routeAction, wc *routev3.WeightedCluster) error {
	if wc.GetRuntimeKeyPrefix() != "" {
		return fmt.Errorf("weighted_clusters.runtime_key_prefix is not supported")
	}
	if wc.GetRandomValueSpecifier() != nil {
		return fmt.Errorf("weighted_clusters.random_value_specifier is not supported")
	}
	for _, c := range wc.GetClusters() {
		switch {
		case c.GetClusterHeader() != "":
			return fmt.Errorf("weighted cluster cluster_header is not supported")
		case c.GetMetadataMatch() != nil:
			return fmt.Errorf("weighted cluster %q: metadata_match is not supported", c.GetName())
		case len(c.GetTypedPerFilterConfig()) > 0:
			return fmt.Errorf("weighted cluster %q: typed_per_filter_config is not supported", c.GetName())
		}
		w := weightedCluster{name: c.GetName(), weight: uint64(c.GetWeight().GetValue()), hostLiteral: c.GetHostRewriteLiteral()}
		var err error
		if w.reqHeaders, err = compileMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove()); err != nil {
			return fmt.Errorf("weighted cluster %q: %w", c.GetName(), err)
		}
		if w.resHeaders, err = compileMutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove()); err != nil {
			return fmt.Errorf("weighted cluster %q: %w", c.GetName(), err)
		}
		ra.totalWeight += w.weight
		ra.weighted = append(ra.weighted, w)
	}
	if len(ra.weighted) == 0 {
		return fmt.Errorf("weighted_clusters without clusters")
	}
	if ra.totalWeight == 0 {
		return fmt.Errorf("weighted_clusters: total weight is 0")
	}
	return nil
}

// compileRegexRewrite converts Envoy's substitution (\1 for groups) to
// Go's expansion syntax.
func compileRegexRewrite(r *matcherv3.RegexMatchAndSubstitute) (*regexRewrite, error) {
	re, err := regexp.Compile(r.GetPattern().GetRegex())
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	sub := r.GetSubstitution()
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(sub) && sub[i+1] >= '0' && sub[i+1] <= '9':
			b.WriteString("${" + string(sub[i+1]) + "}")
			i++
		case c == '\\' && i+1 < len(sub) && sub[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return &regexRewrite{re: re, sub: b.String()}, nil
}

func (r *regexRewrite) apply(s string) string { return r.re.ReplaceAllString(s, r.sub) }

func compileDirect(d *routev3.DirectResponseAction) (*directResponse, error) {
	if d.GetStatus() < 200 || d.GetStatus() > 599 {
		return nil, fmt.Errorf("direct_response status %d out of range", d.GetStatus())
	}
	if d.GetBodyFormat() != nil {
		return nil, fmt.Errorf("direct_response body_format is not supported")
	}
	dr := &directResponse{status: int(d.GetStatus())}
	if b := d.GetBody(); b != nil {
		switch s := b.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			dr.body = s.InlineString
		case *corev3.DataSource_InlineBytes:
			dr.body = string(s.InlineBytes)
		default:
			return nil, fmt.Errorf("direct_response body %T is not supported", s)
		}
	}
	return dr, nil
}

func compileRedirect(r *routev3.RedirectAction) (*redirectAction, error) {
	ra := &redirectAction{host: r.GetHostRedirect(), port: r.GetPortRedirect(), stripQuery: r.GetStripQuery()}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			ra.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		ra.scheme = strings.ToLower(s.SchemeRedirect)
	}
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		ra.path = p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		v := p.PrefixRewrite
		ra.prefixRewrite = &v
	case *routev3.RedirectAction_RegexRewrite:
		rr, err := compileRegexRewrite(p.RegexRewrite)
		if err != nil {
			return nil, fmt.Errorf("redirect regex_rewrite: %w", err)
		}
		ra.regexRewrite = rr
	}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		ra.code = 301
	case routev3.RedirectAction_FOUND:
		ra.code = 302
	case routev3.RedirectAction_SEE_OTHER:
		ra.code = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		ra.code = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		ra.code = 308
	default:
		return nil, fmt.Errorf("redirect response_code %v is not supported", r.GetResponseCode())
	}
	return ra, nil
}

func compileMirrors(ms []*routev3.RouteAction_RequestMirrorPolicy) ([]mirrorPolicy, error) {
	var out []mirrorPolicy
	for _, m := range ms {
		switch {
		case m.GetClusterHeader() != "":
			return nil, fmt.Errorf("request_mirror_policies cluster_header is not supported")
		case len(m.GetRequestHeadersMutations()) > 0:
			return nil, fmt.Errorf("request_mirror_policies request_headers_mutations is not supported")
		case m.GetHostRewriteLiteral() != "":
			return nil, fmt.Errorf("request_mirror_policies host_rewrite_literal is not supported")
		case m.GetCluster() == "":
			return nil, fmt.Errorf("request_mirror_policies without a cluster")
		}
		mp := mirrorPolicy{cluster: m.GetCluster(), numerator: 100, denominator: 100, noSuffix: m.GetDisableShadowHostSuffixAppend()}
		if rf := m.GetRuntimeFraction(); rf != nil {
			mp.numerator, mp.denominator = fraction(rf.GetDefaultValue())
		}
		out = append(out, mp)
	}
	return out, nil
}

// fraction returns numerator and denominator of a FractionalPercent.
func fraction(f *typev3.FractionalPercent) (uint64, uint64) {
	if f == nil {
		return 0, 100
	}
	den := uint64(100)
	switch f.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10000
	case typev3.FractionalPercent_MILLION:
		den = 1000000
	}
	return min(uint64(f.GetNumerator()), den), den
}
