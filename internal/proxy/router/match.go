package router

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       matchKind
	value      string
	ignoreCase bool
	re         *regexp.Regexp
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchContains
	matchRegex
)

func compileRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, fmt.Errorf("missing regex")
	}
	// Envoy's safe_regex must match the whole value.
	re, err := regexp.Compile("^(?:" + m.GetRegex() + ")$")
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = matchExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = matchPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = matchSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = matchContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return sm, err
		}
		sm.kind, sm.re = matchRegex, re
	default:
		return sm, fmt.Errorf("string matcher %T is not supported", p)
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

func (m *stringMatcher) match(s string) bool {
	if m.kind == matchRegex {
		return m.re.MatchString(s)
	}
	if m.ignoreCase {
		s = strings.ToLower(s)
	}
	switch m.kind {
	case matchExact:
		return s == m.value
	case matchPrefix:
		return strings.HasPrefix(s, m.value)
	case matchSuffix:
		return strings.HasSuffix(s, m.value)
	case matchContains:
		return strings.Contains(s, m.value)
	}
	return false
}

// headerMatcher is a compiled HeaderMatcher.
type headerMatcher struct {
	name          string // canonical, or a pseudo header
	present       bool   // present_match (value: presentWant)
	presentWant   bool
	str           *stringMatcher
	rangeMatch    *[2]int64
	invert        bool
	missingAsEmpt bool
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	hm := headerMatcher{name: h.GetName(), invert: h.GetInvertMatch(), missingAsEmpt: h.GetTreatMissingHeaderAsEmpty()}
	if hm.name == "" {
		return hm, fmt.Errorf("header matcher without a name")
	}
	if !strings.HasPrefix(hm.name, ":") {
		hm.name = http.CanonicalHeaderKey(hm.name)
	} else {
		switch hm.name {
		case ":method", ":authority", ":scheme", ":path", ":status":
		default:
			return hm, fmt.Errorf("pseudo header %q is not supported", hm.name)
		}
	}
	str := func(sm stringMatcher, err error) error {
		if err != nil {
			return err
		}
		hm.str = &sm
		return nil
	}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// No specifier: the header must be present (Envoy's legacy rule).
		hm.present, hm.presentWant = true, true
	case *routev3.HeaderMatcher_ExactMatch:
		err = str(stringMatcher{kind: matchExact, value: s.ExactMatch}, nil)
	case *routev3.HeaderMatcher_PrefixMatch:
		err = str(stringMatcher{kind: matchPrefix, value: s.PrefixMatch}, nil)
	case *routev3.HeaderMatcher_SuffixMatch:
		err = str(stringMatcher{kind: matchSuffix, value: s.SuffixMatch}, nil)
	case *routev3.HeaderMatcher_ContainsMatch:
		err = str(stringMatcher{kind: matchContains, value: s.ContainsMatch}, nil)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, rerr := compileRegex(s.SafeRegexMatch)
		err = str(stringMatcher{kind: matchRegex, re: re}, rerr)
	case *routev3.HeaderMatcher_StringMatch:
		err = str(compileStringMatcher(s.StringMatch))
	case *routev3.HeaderMatcher_PresentMatch:
		hm.present, hm.presentWant = true, s.PresentMatch
	case *routev3.HeaderMatcher_RangeMatch:
		hm.rangeMatch = &[2]int64{s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()}
	default:
		return hm, fmt.Errorf("header matcher %T is not supported", s)
	}
	if err != nil {
		return hm, fmt.Errorf("header %q: %w", h.GetName(), err)
	}
	return hm, nil
}

// requestView is what matching reads from a request.
type requestView struct {
	r      *http.Request
	path   string // escaped path, no query
	scheme string
	query  url.Values // parsed on demand
	parsed bool
	status string // ":status" when matching a response
}

func (v *requestView) header(name string) (string, bool) {
	switch name {
	case ":method":
		return v.r.Method, true
	case ":authority":
		return v.r.Host, true
	case ":scheme":
		return v.scheme, true
	case ":path":
		return v.r.URL.RequestURI(), true
	case ":status":
		return v.status, v.status != ""
	}
	vals, ok := v.r.Header[name]
	if !ok {
		return "", false
	}
	return strings.Join(vals, ","), true
}

func (v *requestView) queryValues() url.Values {
	if !v.parsed {
		v.query, _ = url.ParseQuery(v.r.URL.RawQuery)
		v.parsed = true
	}
	return v.query
}

func (h *headerMatcher) match(v *requestView) bool {
	val, ok := v.header(h.name)
	if !ok && h.missingAsEmpt {
		val, ok = "", true
	}
	var res bool
	switch {
	case h.present:
		res = ok == h.presentWant
	case !ok:
		return false // absent headers never match, even inverted (Envoy)
	case h.str != nil:
		res = h.str.match(val)
	case h.rangeMatch != nil:
		n, err := strconv.ParseInt(val, 10, 64)
		res = err == nil && n >= h.rangeMatch[0] && n < h.rangeMatch[1]
	}
	return res != h.invert
}

type queryMatcher struct {
	name    string
	present bool
	str     *stringMatcher
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher) (queryMatcher, error) {
	qm := queryMatcher{name: q.GetName()}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case nil:
		qm.present = true
	case *routev3.QueryParameterMatcher_PresentMatch:
		if !s.PresentMatch {
			return qm, fmt.Errorf("query parameter %q: present_match false is not supported", q.GetName())
		}
		qm.present = true
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return qm, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
		}
		qm.str = &sm
	}
	return qm, nil
}

func (q *queryMatcher) match(v *requestView) bool {
	vals, ok := v.queryValues()[q.name]
	if !ok {
		return false
	}
	if q.present {
		return true
	}
	// Envoy matches the first value of a repeated parameter.
	return q.str.match(vals[0])
}

// routeMatch is a compiled RouteMatch.
type routeMatch struct {
	kind          pathKind
	value         string // lower-cased when !caseSensitive
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
	query         []queryMatcher
	grpc          bool
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

func compileRouteMatch(m *routev3.RouteMatch) (routeMatch, error) {
	rm := routeMatch{caseSensitive: true}
	if cs := m.GetCaseSensitive(); cs != nil {
		rm.caseSensitive = cs.GetValue()
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = pathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return rm, err
		}
		if !rm.caseSensitive {
			re, err = regexp.Compile("(?i)" + re.String())
			if err != nil {
				return rm, err
			}
		}
		rm.kind, rm.re = pathRegex, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.value = pathSeparatedPrefix, p.PathSeparatedPrefix
	default:
		return rm, fmt.Errorf("path specifier %T is not supported", p)
	}
	if !rm.caseSensitive {
		rm.value = strings.ToLower(rm.value)
	}
	switch {
	case m.GetRuntimeFraction() != nil:
		return rm, fmt.Errorf("match.runtime_fraction is not supported")
	case len(m.GetCookies()) > 0:
		return rm, fmt.Errorf("match.cookies is not supported")
	case m.GetTlsContext() != nil:
		return rm, fmt.Errorf("match.tls_context is not supported")
	case len(m.GetDynamicMetadata()) > 0:
		return rm, fmt.Errorf("match.dynamic_metadata is not supported")
	case len(m.GetFilterState()) > 0:
		return rm, fmt.Errorf("match.filter_state is not supported")
	}
	rm.grpc = m.GetGrpc() != nil
	for _, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return rm, err
		}
		rm.headers = append(rm.headers, hm)
	}
	for _, q := range m.GetQueryParameters() {
		qm, err := compileQueryMatcher(q)
		if err != nil {
			return rm, err
		}
		rm.query = append(rm.query, qm)
	}
	return rm, nil
}

func (m *routeMatch) match(v *requestView) bool {
	path := v.path
	switch m.kind {
	case pathRegex:
		if !m.re.MatchString(path) {
			return false
		}
	default:
		if !m.caseSensitive {
			path = strings.ToLower(path)
		}
		switch m.kind {
		case pathPrefix:
			if !strings.HasPrefix(path, m.value) {
				return false
			}
		case pathExact:
			if path != m.value {
				return false
			}
		case pathSeparatedPrefix:
			if !strings.HasPrefix(path, m.value) || (len(path) > len(m.value) && path[len(m.value)] != '/') {
				return false
			}
		}
	}
	if m.grpc && !isGRPC(v.r) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].match(v) {
			return false
		}
	}
	for i := range m.query {
		if !m.query[i].match(v) {
			return false
		}
	}
	return true
}

func isGRPC(r *http.Request) bool {
	ct := httphead.Get(r.Header, "Content-Type")
	return strings.HasPrefix(ct, "application/grpc")
}

// matchedLen is the length of the part of path the route matched, which
// prefix_rewrite replaces: the prefix, or the whole path for exact and
// regex matches.
func (m *routeMatch) matchedLen(path string) int {
	switch m.kind {
	case pathPrefix, pathSeparatedPrefix:
		return min(len(path), len(m.value))
	}
	return len(path)
}
