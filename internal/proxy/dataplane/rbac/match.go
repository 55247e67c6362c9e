package rbac

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// StringMatch compiles an Envoy StringMatcher into a predicate.
func StringMatch(m *matcher.StringMatcher) (func(string) bool, error) {
	if m == nil {
		return nil, fmt.Errorf("string matcher is missing")
	}
	fold := m.GetIgnoreCase()
	norm := func(s string) string {
		if fold {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		want := norm(p.Exact)
		return func(s string) bool { return norm(s) == want }, nil
	case *matcher.StringMatcher_Prefix:
		want := norm(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), want) }, nil
	case *matcher.StringMatcher_Suffix:
		want := norm(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), want) }, nil
	case *matcher.StringMatcher_Contains:
		want := norm(p.Contains)
		return func(s string) bool { return strings.Contains(norm(s), want) }, nil
	case *matcher.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", p.SafeRegex.GetRegex(), err)
		}
		return re.MatchString, nil
	default:
		return nil, fmt.Errorf("string matcher %T is not supported", p)
	}
}

// headerMatch compiles an Envoy HeaderMatcher. Pseudo headers :method,
// :authority, :path and :scheme read the request line.
func headerMatch(m *route.HeaderMatcher) (func(*Request) bool, error) {
	name := strings.ToLower(m.GetName())
	get := func(r *Request) (string, bool) {
		switch name {
		case ":method":
			return r.Method, r.Method != ""
		case ":authority", "host":
			return r.Host, r.Host != ""
		case ":path":
			return r.RawPath, r.RawPath != ""
		case ":scheme":
			return r.Scheme, r.Scheme != ""
		}
		vs := r.Headers.Values(http.CanonicalHeaderKey(name))
		if len(vs) == 0 {
			return "", false
		}
		return strings.Join(vs, ","), true
	}
	var pred func(string) bool
	presentWanted := true
	switch p := m.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_StringMatch:
		f, err := StringMatch(p.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", name, err)
		}
		pred = f
	case *route.HeaderMatcher_ExactMatch:
		pred = func(s string) bool { return s == p.ExactMatch }
	case *route.HeaderMatcher_PrefixMatch:
		pred = func(s string) bool { return strings.HasPrefix(s, p.PrefixMatch) }
	case *route.HeaderMatcher_SuffixMatch:
		pred = func(s string) bool { return strings.HasSuffix(s, p.SuffixMatch) }
	case *route.HeaderMatcher_ContainsMatch:
		pred = func(s string) bool { return strings.Contains(s, p.ContainsMatch) }
	case *route.HeaderMatcher_SafeRegexMatch:
		re, err := regexp.Compile("^(?:" + p.SafeRegexMatch.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("header %s: regex: %w", name, err)
		}
		pred = re.MatchString
	case *route.HeaderMatcher_PresentMatch:
		presentWanted = p.PresentMatch
		pred = func(string) bool { return true }
	case nil:
		pred = func(string) bool { return true }
	default:
		return nil, fmt.Errorf("header %s: matcher %T is not supported", name, p)
	}
	invert := m.GetInvertMatch()
	return func(r *Request) bool {
		v, ok := get(r)
		var res bool
		if !ok {
			res = !presentWanted
		} else {
			res = presentWanted && pred(v)
		}
		return res != invert
	}, nil
}

// valueMatch compiles a ValueMatcher over decoded JSON-like values
// (string, bool, float64, []any, map[string]any).
func valueMatch(m *matcher.ValueMatcher) (func(any, bool) bool, error) {
	switch p := m.GetMatchPattern().(type) {
	case *matcher.ValueMatcher_StringMatch:
		f, err := StringMatch(p.StringMatch)
		if err != nil {
			return nil, err
		}
		return func(v any, ok bool) bool {
			s, isStr := v.(string)
			return ok && isStr && f(s)
		}, nil
	case *matcher.ValueMatcher_PresentMatch:
		return func(_ any, ok bool) bool { return ok == p.PresentMatch }, nil
	case *matcher.ValueMatcher_BoolMatch:
		return func(v any, ok bool) bool { b, isB := v.(bool); return ok && isB && b == p.BoolMatch }, nil
	case *matcher.ValueMatcher_ListMatch:
		one, err := valueMatch(p.ListMatch.GetOneOf())
		if err != nil {
			return nil, err
		}
		return func(v any, ok bool) bool {
			switch l := v.(type) {
			case []any:
				for _, e := range l {
					if one(e, true) {
						return true
					}
				}
			case []string:
				for _, e := range l {
					if one(e, true) {
						return true
					}
				}
			}
			return false
		}, nil
	case *matcher.ValueMatcher_OrMatch:
		var fs []func(any, bool) bool
		for _, vm := range p.OrMatch.GetValueMatchers() {
			f, err := valueMatch(vm)
			if err != nil {
				return nil, err
			}
			fs = append(fs, f)
		}
		return func(v any, ok bool) bool {
			for _, f := range fs {
				if f(v, ok) {
					return true
				}
			}
			return false
		}, nil
	default:
		return nil, fmt.Errorf("value matcher %T is not supported", p)
	}
}
