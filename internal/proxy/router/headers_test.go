package router

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestHeaderMutation(t *testing.T) {
	req := httptest.NewRequest("GET", "http://svc/p?q=1", nil)
	req.RemoteAddr = "10.1.2.3:5555"
	req.Header.Set("X-User", "jason")
	fc := &fmtContext{r: req, upstreamAddr: "10.0.0.9:8080"}
	opt := func(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return hdrOpt(k, v, a)
	}
	cases := []struct {
		name     string
		add      []*corev3.HeaderValueOption
		remove   []string
		start    http.Header
		want     http.Header
		wantHost string
	}{
		{"append to existing", []*corev3.HeaderValueOption{opt("x-a", "2", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}, nil,
			http.Header{"X-A": {"1"}}, http.Header{"X-A": {"1", "2"}}, "svc"},
		{"add if absent keeps existing", []*corev3.HeaderValueOption{opt("x-a", "2", corev3.HeaderValueOption_ADD_IF_ABSENT), opt("x-b", "3", corev3.HeaderValueOption_ADD_IF_ABSENT)}, nil,
			http.Header{"X-A": {"1"}}, http.Header{"X-A": {"1"}, "X-B": {"3"}}, "svc"},
		{"overwrite or add", []*corev3.HeaderValueOption{opt("x-a", "2", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}, nil,
			http.Header{"X-A": {"1", "0"}}, http.Header{"X-A": {"2"}}, "svc"},
		{"overwrite only if exists", []*corev3.HeaderValueOption{opt("x-a", "2", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS), opt("x-b", "2", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS)}, nil,
			http.Header{"X-A": {"1"}}, http.Header{"X-A": {"2"}}, "svc"},
		{"deprecated append false overwrites", []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "2"}, Append: wrapperspb.Bool(false)}}, nil,
			http.Header{"X-A": {"1"}}, http.Header{"X-A": {"2"}}, "svc"},
		{"remove then add", []*corev3.HeaderValueOption{opt("x-a", "new", 0)}, []string{"x-a", "x-c"},
			http.Header{"X-A": {"old"}, "X-C": {"1"}}, http.Header{"X-A": {"new"}}, "svc"},
		{"empty value skipped", []*corev3.HeaderValueOption{opt("x-a", "", 0), {Header: &corev3.HeaderValue{Key: "x-k", Value: ""}, KeepEmptyValue: true}}, nil,
			http.Header{}, http.Header{"X-K": {""}}, "svc"},
		{"host and :authority", []*corev3.HeaderValueOption{opt(":authority", "other", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}, []string{"host"},
			http.Header{}, http.Header{}, "other"},
		{"operators", []*corev3.HeaderValueOption{opt("x-f", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(x-user)% %REQ(:path)% 100%% %PROTOCOL% %UPSTREAM_REMOTE_ADDRESS%", 0)}, nil,
			http.Header{}, http.Header{"X-F": {"10.1.2.3 jason /p?q=1 100% HTTP/1.1 10.0.0.9:8080"}}, "svc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := compileMutation(tc.add, tc.remove)
			if err != nil {
				t.Fatal(err)
			}
			h, host := tc.start.Clone(), "svc"
			m.apply(h, &host, fc)
			if !reflect.DeepEqual(h, tc.want) || host != tc.wantHost {
				t.Fatalf("got %v host %q, want %v host %q", h, host, tc.want, tc.wantHost)
			}
		})
	}
	for _, bad := range []string{"%UNKNOWN%", "%REQ%", "50%", "%START_TIME(%s)%"} {
		if _, err := compileFormat(bad); err == nil {
			t.Errorf("format %q compiled", bad)
		}
	}
}

func TestSmallHelpers(t *testing.T) {
	h := http.Header{"Connection": {"keep-alive, X-Private"}, "X-Private": {"1"}, "Keep-Alive": {"t"}, "Te": {"trailers, deflate"},
		"Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"}, "Proxy-Connection": {"x"}, "X-Keep": {"1"}}
	stripHopByHop(h)
	if !reflect.DeepEqual(h, http.Header{"Te": {"trailers"}, "X-Keep": {"1"}}) {
		t.Errorf("stripHopByHop left %v", h)
	}
	for in, want := range map[string]string{"svc:8080": "svc-shadow:8080", "svc": "svc-shadow", "[::1]": "[::1]-shadow", "[::1]:80": "[::1]-shadow:80"} {
		if got := shadowAuthority(in); got != want {
			t.Errorf("shadowAuthority(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"a:80": "a", "a": "a", "[::1]:80": "[::1]", "::1": "::1", "a:x": "a:x"} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]time.Duration{"100m": 100 * time.Millisecond, "5S": 5 * time.Second, "1H": time.Hour, "2u": 2 * time.Microsecond} {
		if got, ok := parseGRPCTimeout(in); !ok || got != want {
			t.Errorf("parseGRPCTimeout(%q) = %v %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "m", "10x", "-1S", "123456789S"} {
		if _, ok := parseGRPCTimeout(bad); ok {
			t.Errorf("parseGRPCTimeout(%q) accepted", bad)
		}
	}
	for code, want := range map[int]int{400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14, 500: 2} {
		if got := grpcStatusFor(code); got != want {
			t.Errorf("grpcStatusFor(%d) = %d, want %d", code, got, want)
		}
	}
	id := NewRequestID()
	if len(id) != 36 || id[14] != '4' || strings.Count(id, "-") != 4 {
		t.Errorf("request id %q is not a UUIDv4", id)
	}
}
