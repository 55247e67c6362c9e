package router

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
)

// Filter names of typed_per_filter_config this router implements.
const (
	FaultFilterName = "envoy.filters.http.fault"
	CORSFilterName  = "envoy.filters.http.cors"
)

// retryOn flags (Envoy's retry_on names).
type retryOn uint32

const (
	retry5xx retryOn = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRetriable4xx
	retryRefusedStream
	retryStatusCodes
	retryGRPCCancelled
	retryGRPCDeadlineExceeded
	retryGRPCResourceExhausted
	retryGRPCUnavailable
	retryGRPCInternal
	retryRateLimited
	retryHeaders
	retryResetBeforeRequest
)

var retryOnNames = map[string]retryOn{
	"5xx":                    retry5xx,
	"gateway-error":          retryGatewayError,
	"reset":                  retryReset,
	"connect-failure":        retryConnectFailure,
	"retriable-4xx":          retryRetriable4xx,
	"refused-stream":         retryRefusedStream,
	"retriable-status-codes": retryStatusCodes,
	"cancelled":              retryGRPCCancelled,
	"deadline-exceeded":      retryGRPCDeadlineExceeded,
	"resource-exhausted":     retryGRPCResourceExhausted,
	"unavailable":            retryGRPCUnavailable,
	"internal":               retryGRPCInternal,
	"envoy-ratelimited":      retryRateLimited,
	"retriable-headers":      retryHeaders,
	"reset-before-request":   retryResetBeforeRequest,
	// HTTP/3 is never used upstream, so this never applies.
	"http3-post-connect-failure": 0,
}

type retryPolicy struct {
	on          retryOn
	resHeaders  []headerMatcher // retriable_headers, on the response
	reqHeaders  []headerMatcher // retriable_request_headers
	numRetries  int
	perTry      time.Duration
	codes       map[int]bool
	baseBackoff time.Duration
	maxBackoff  time.Duration
}

// Envoy's retry back-off defaults.
const (
	defaultBackoffBase = 25 * time.Millisecond
)

func compileRetry(p *routev3.RetryPolicy) (*retryPolicy, error) {
	rp := &retryPolicy{numRetries: 1, codes: map[int]bool{}, baseBackoff: defaultBackoffBase}
	for _, name := range strings.Split(p.GetRetryOn(), ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		f, ok := retryOnNames[name]
		if !ok {
			continue // Envoy ignores names it does not know; so does the router

		}
		rp.on |= f
	}
	if n := p.GetNumRetries(); n != nil {
		rp.numRetries = int(n.GetValue())
	}
	if d := p.GetPerTryTimeout(); d != nil {
		rp.perTry = d.AsDuration()
	}
	for _, c := range p.GetRetriableStatusCodes() {
		rp.codes[int(c)] = true
	}
	if b := p.GetRetryBackOff(); b != nil {
		rp.baseBackoff = b.GetBaseInterval().AsDuration()
		if b.GetMaxInterval() != nil {
			rp.maxBackoff = b.GetMaxInterval().AsDuration()
		}
	}
	for _, h := range p.GetRetriableHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("retriable_headers: %w", err)
		}
		rp.resHeaders = append(rp.resHeaders, hm)
	}
	for _, h := range p.GetRetriableRequestHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("retriable_request_headers: %w", err)
		}
		rp.reqHeaders = append(rp.reqHeaders, hm)
	}
	if rp.maxBackoff == 0 {
		rp.maxBackoff = 10 * rp.baseBackoff
	}
	for _, hp := range p.GetRetryHostPredicate() {
		if hp.GetName() != "envoy.retry_host_predicates.previous_hosts" {
			return nil, fmt.Errorf("retry_host_predicate %q is not supported", hp.GetName())
		}
	}
	switch {
	case p.GetRetryPriority() != nil:
		return nil, fmt.Errorf("retry_priority is not supported")
	case len(p.GetRetryOptionsPredicates()) > 0:
		return nil, fmt.Errorf("retry_options_predicates are not supported")
	case p.GetRateLimitedRetryBackOff() != nil:
		return nil, fmt.Errorf("rate_limited_retry_back_off is not supported")
	case p.GetPerTryIdleTimeout() != nil:
		return nil, fmt.Errorf("per_try_idle_timeout is not supported")
	}
	return rp, nil
}

// requestAllowed reports whether retriable_request_headers allow retrying
// the request (any matcher matching; no matchers: always).
func (rp *retryPolicy) requestAllowed(v *requestView) bool {
	if len(rp.reqHeaders) == 0 {
		return true
	}
	for i := range rp.reqHeaders {
		if rp.reqHeaders[i].match(v) {
			return true
		}
	}
	return false
}

// retryResponse reports whether a response is retried under the policy.
func (rp *retryPolicy) retryResponse(resp *http.Response) bool {
	if rp.retryStatus(resp.StatusCode, httphead.Get(resp.Header, "Grpc-Status")) {
		return true
	}
	if rp.on&retryRateLimited != 0 && httphead.Get(resp.Header, "X-Envoy-Ratelimited") != "" {
		return true
	}
	if rp.on&retryHeaders != 0 {
		v := &requestView{r: &http.Request{Header: resp.Header, URL: &url.URL{}}, status: strconv.Itoa(resp.StatusCode)}
		for i := range rp.resHeaders {
			if rp.resHeaders[i].match(v) {
				return true
			}
		}
	}
	return false
}

// retryStatus reports whether a response with this status and grpc-status
// is retried under the policy.
func (rp *retryPolicy) retryStatus(status int, grpcStatus string) bool {
	switch {
	case rp.on&retry5xx != 0 && status >= 500:
		return true
	case rp.on&retryGatewayError != 0 && (status == 502 || status == 503 || status == 504):
		return true
	case rp.on&retryRetriable4xx != 0 && status == 409:
		return true
	case rp.on&retryStatusCodes != 0 && rp.codes[status]:
		return true
	}
	if grpcStatus != "" {
		switch grpcStatus {
		case "1":
			return rp.on&retryGRPCCancelled != 0
		case "4":
			return rp.on&retryGRPCDeadlineExceeded != 0
		case "8":
			return rp.on&retryGRPCResourceExhausted != 0
		case "13":
			return rp.on&retryGRPCInternal != 0
		case "14":
			return rp.on&retryGRPCUnavailable != 0
		}
	}
	return false
}

// failure kinds an attempt can end in before response headers.
type failureKind uint8

const (
	failConnect failureKind = iota
	failReset
	failRefused
	failPerTryTimeout
)

func (rp *retryPolicy) retryFailure(k failureKind) bool {
	if rp.on&(retry5xx|retryGatewayError) != 0 {
		return true // both cover connect failures, resets and per-try timeouts
	}
	switch k {
	case failConnect:
		return rp.on&(retryConnectFailure|retryResetBeforeRequest) != 0
	case failReset:
		return rp.on&retryReset != 0
	case failRefused:
		return rp.on&(retryRefusedStream|retryReset|retryResetBeforeRequest) != 0
	}
	return false
}

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashSourceIP
	hashQuery
)

type hashPolicy struct {
	kind     hashKind
	name     string
	ttl      *time.Duration
	path     string
	terminal bool
	rewrite  *regexRewrite
}

func compileHashPolicies(ps []*routev3.RouteAction_HashPolicy) ([]hashPolicy, error) {
	var out []hashPolicy
	for _, p := range ps {
		hp := hashPolicy{terminal: p.GetTerminal()}
		switch s := p.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			hp.kind, hp.name = hashHeader, s.Header.GetHeaderName()
			if strings.HasPrefix(hp.name, ":") && hp.name != ":authority" && hp.name != ":path" && hp.name != ":method" {
				return nil, fmt.Errorf("hash_policy header %q is not supported", hp.name)
			}
			if rr := s.Header.GetRegexRewrite(); rr != nil {
				var err error
				if hp.rewrite, err = compileRegexRewrite(rr); err != nil {
					return nil, fmt.Errorf("hash_policy header regex_rewrite: %w", err)
				}
			}
		case *routev3.RouteAction_HashPolicy_Cookie_:
			hp.kind, hp.name, hp.path = hashCookie, s.Cookie.GetName(), s.Cookie.GetPath()
			if s.Cookie.GetTtl() != nil {
				d := s.Cookie.GetTtl().AsDuration()
				hp.ttl = &d
			}
			if len(s.Cookie.GetAttributes()) > 0 {
				return nil, fmt.Errorf("hash_policy cookie attributes are not supported")
			}
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !s.ConnectionProperties.GetSourceIp() {
				continue
			}
			hp.kind = hashSourceIP
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			hp.kind, hp.name = hashQuery, s.QueryParameter.GetName()
		default:
			return nil, fmt.Errorf("hash_policy %T is not supported", s)
		}
		out = append(out, hp)
	}
	return out, nil
}

type faultPolicy struct {
	delay     time.Duration
	delayNum  uint64
	delayDen  uint64
	abortHTTP int
	abortGRPC int // -1: none
	abortNum  uint64
	abortDen  uint64
	hasDelay  bool
	hasAbort  bool
	headers   []headerMatcher
	maxActive int64 // 0: unlimited
	active    atomic.Int64
}

type corsPolicy struct {
	origins      []stringMatcher
	methods      string
	headers      string
	expose       string
	maxAge       string
	credentials  bool
	enabledNum   uint64
	enabledDen   uint64
	forwardNoMat bool
	privateNet   bool
}

func compileFilterConfigs(m map[string]*anypb.Any) (filterConfigs, error) {
	var fc filterConfigs
	for name, a := range m {
		optional := false
		if a.MessageIs(&routev3.FilterConfig{}) {
			var w routev3.FilterConfig
			if err := a.UnmarshalTo(&w); err != nil {
				return fc, fmt.Errorf("typed_per_filter_config %q: %w", name, err)
			}
			if w.GetDisabled() {
				continue
			}
			optional = w.GetIsOptional()
			a = w.GetConfig()
		}
		switch name {
		case FaultFilterName:
			var f faultv3.HTTPFault
			if err := a.UnmarshalTo(&f); err != nil {
				return fc, fmt.Errorf("typed_per_filter_config %q: %w", name, err)
			}
			fp, err := compileFault(&f)
			if err != nil {
				return fc, fmt.Errorf("fault: %w", err)
			}
			fc.fault = fp
		case CORSFilterName:
			var c corsv3.CorsPolicy
			if err := a.UnmarshalTo(&c); err != nil {
				return fc, fmt.Errorf("typed_per_filter_config %q: %w", name, err)
			}
			cp, err := compileCORS(&c)
			if err != nil {
				return fc, fmt.Errorf("cors: %w", err)
			}
			fc.cors = cp
		default:
			if !optional {
				return fc, fmt.Errorf("typed_per_filter_config %q is not supported", name)
			}
		}
	}
	return fc, nil
}

func compileFault(f *faultv3.HTTPFault) (*faultPolicy, error) {
	fp := &faultPolicy{abortGRPC: -1}
	switch {
	case len(f.GetDownstreamNodes()) > 0:
		return nil, fmt.Errorf("downstream_nodes is not supported")
	case f.GetResponseRateLimit() != nil:
		return nil, fmt.Errorf("response_rate_limit is not supported")
	case f.GetUpstreamCluster() != "":
		return nil, fmt.Errorf("upstream_cluster is not supported")
	}
	if d := f.GetDelay(); d != nil {
		if d.GetHeaderDelay() != nil {
			return nil, fmt.Errorf("header_delay is not supported")
		}
		fp.hasDelay = true
		fp.delay = d.GetFixedDelay().AsDuration()
		fp.delayNum, fp.delayDen = fraction(d.GetPercentage())
		if d.GetPercentage() == nil {
			fp.delayNum, fp.delayDen = 100, 100
		}
	}
	if a := f.GetAbort(); a != nil {
		fp.hasAbort = true
		switch e := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if e.HttpStatus < 200 || e.HttpStatus > 599 {
				return nil, fmt.Errorf("abort http_status %d out of range", e.HttpStatus)
			}
			fp.abortHTTP = int(e.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			fp.abortGRPC = int(e.GrpcStatus)
		default:
			return nil, fmt.Errorf("abort %T is not supported", e)
		}
		fp.abortNum, fp.abortDen = fraction(a.GetPercentage())
		if a.GetPercentage() == nil {
			fp.abortNum, fp.abortDen = 100, 100
		}
	}
	for _, h := range f.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, err
		}
		fp.headers = append(fp.headers, hm)
	}
	if m := f.GetMaxActiveFaults(); m != nil {
		fp.maxActive = int64(m.GetValue())
		if fp.maxActive == 0 {
			fp.maxActive = -1 // no fault may be active
		}
	}
	return fp, nil
}

func compileCORS(c *corsv3.CorsPolicy) (*corsPolicy, error) {
	cp := &corsPolicy{
		methods:      c.GetAllowMethods(),
		headers:      c.GetAllowHeaders(),
		expose:       c.GetExposeHeaders(),
		maxAge:       c.GetMaxAge(),
		credentials:  c.GetAllowCredentials().GetValue(),
		enabledNum:   100,
		enabledDen:   100,
		forwardNoMat: true,
		privateNet:   c.GetAllowPrivateNetworkAccess().GetValue(),
	}
	if c.GetForwardNotMatchingPreflights() != nil {
		cp.forwardNoMat = c.GetForwardNotMatchingPreflights().GetValue()
	}
	if fe := c.GetFilterEnabled(); fe != nil {
		cp.enabledNum, cp.enabledDen = fraction(fe.GetDefaultValue())
	}
	if c.GetShadowEnabled() != nil {
		return nil, fmt.Errorf("shadow_enabled is not supported")
	}
	if cp.maxAge != "" {
		if _, err := strconv.ParseUint(cp.maxAge, 10, 64); err != nil {
			return nil, fmt.Errorf("max_age %q is not a number of seconds", cp.maxAge)
		}
	}
	for _, o := range c.GetAllowOriginStringMatch() {
		sm, err := compileStringMatcher(o)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match: %w", err)
		}
		cp.origins = append(cp.origins, sm)
	}
	return cp, nil
}

func (c *corsPolicy) allowed(origin string) bool {
	for i := range c.origins {
		// Like Envoy, a matcher that accepts "*" allows every origin.
		if c.origins[i].match("*") || c.origins[i].match(origin) {
			return true
		}
	}
	return false
}
