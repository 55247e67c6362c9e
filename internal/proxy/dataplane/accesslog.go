package dataplane

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filelog "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
)

// defaultLogFormat is Envoy's default access log format, which Istio's
// default text format extends.
const defaultLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// accessLog writes one formatted line per request or TCP connection.
type accessLog struct {
	out   *logFile
	parts []logPart
}

type logPart func(*logEntry) string

type logEntry struct {
	req      *http.Request // nil for TCP
	rw       *respWriter   // nil for TCP
	ci       *connInfo
	ri       RequestInfo
	start    time.Time
	dur      time.Duration
	bytesIn  int64
	bytesOut int64
}

func newAccessLog(al *accesslogv3.AccessLog) (*accessLog, error) {
	if al.GetFilter() != nil {
		return nil, fmt.Errorf("access log filters are not supported")
	}
	if al.GetName() != "envoy.access_loggers.file" && al.GetName() != "envoy.file_access_log" {
		return nil, fmt.Errorf("access logger %q is not supported", al.GetName())
	}
	cfg := &filelog.FileAccessLog{}
	if err := anyTo(al.GetTypedConfig(), cfg); err != nil {
		return nil, err
	}
	format := defaultLogFormat
	switch {
	case cfg.GetLogFormat() != nil:
		lf := cfg.GetLogFormat()
		if lf.GetJsonFormat() != nil {
			return nil, fmt.Errorf("json_format is not supported")
		}
		if src := lf.GetTextFormatSource(); src != nil {
			b, err := dataSource(src)
			if err != nil {
				return nil, fmt.Errorf("text_format_source: %w", err)
			}
			format = string(b)
		} else if lf.GetTextFormat() != "" {
			format = lf.GetTextFormat()
		}
	case cfg.GetFormat() != "":
		format = cfg.GetFormat()
	}
	parts, err := parseLogFormat(format)
	if err != nil {
		return nil, err
	}
	f, err := openLogFile(cfg.GetPath())
	if err != nil {
		return nil, err
	}
	return &accessLog{out: f, parts: parts}, nil
}

func (l *accessLog) write(e *logEntry) {
	var b strings.Builder
	for _, p := range l.parts {
		b.WriteString(p(e))
	}
	l.out.write(b.String())
}

// logFile is an access log destination shared by every logger naming it.
type logFile struct {
	mu sync.Mutex
	w  io.Writer
}

var (
	logFilesMu sync.Mutex
	logFiles   = map[string]*logFile{}
)

func openLogFile(path string) (*logFile, error) {
	logFilesMu.Lock()
	defer logFilesMu.Unlock()
	if f, ok := logFiles[path]; ok {
		return f, nil
	}
	var w io.Writer
	switch path {
	case "/dev/stdout":
		w = os.Stdout
	case "/dev/stderr":
		w = os.Stderr
	case "":
		return nil, fmt.Errorf("access log path is empty")
	default:
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		w = f
	}
	lf := &logFile{w: w}
	logFiles[path] = lf
	return lf, nil
}

func (f *logFile) write(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = io.WriteString(f.w, s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseLogFormat compiles Envoy's command operators.
func parseLogFormat(format string) ([]logPart, error) {
	var parts []logPart
	for len(format) > 0 {
		i := strings.IndexByte(format, '%')
		if i < 0 {
			lit := format
			parts = append(parts, func(*logEntry) string { return lit })
			break
		}
		if i > 0 {
			lit := format[:i]
			parts = append(parts, func(*logEntry) string { return lit })
		}
		format = format[i+1:]
		j := strings.IndexByte(format, '%')
		if j < 0 {
			return nil, fmt.Errorf("unterminated command operator in access log format")
		}
		op := format[:j]
		format = format[j+1:]
		if op == "" {
			parts = append(parts, func(*logEntry) string { return "%" })
			continue
		}
		p, err := logOperator(op)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
	}
	return parts, nil
}

func logOperator(op string) (logPart, error) {
	// Header operators: REQ(A?B):N, RESP(A?B):N, TRAILER(A):N.
	for _, kind := range []string{"REQ(", "RESP(", "TRAILER("} {
		rest, ok := strings.CutPrefix(op, kind)
		if !ok {
			continue
		}
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return nil, fmt.Errorf("access log operator %%%s%%: missing )", op)
		}
		names := strings.Split(rest[:end], "?")
		maxLen := -1
		if tail := rest[end+1:]; tail != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(tail, ":"))
			if err != nil {
				return nil, fmt.Errorf("access log operator %%%s%%: bad length", op)
			}
			maxLen = n
		}
		req := kind == "REQ("
		return func(e *logEntry) string {
			for _, n := range names {
				var v string
				if req {
					v = requestHeader(e.req, n)
				} else if e.rw != nil {
					v = e.rw.Header().Get(n)
				}
				if v != "" {
					if maxLen >= 0 && len(v) > maxLen {
						v = v[:maxLen]
					}
					return v
				}
			}
			return "-"
		}, nil
	}
	if strings.HasPrefix(op, "START_TIME") {
		layout := "2006-01-02T15:04:05.000Z"
		if rest, ok := strings.CutPrefix(op, "START_TIME("); ok {
			layout = strftime(strings.TrimSuffix(rest, ")"))
		}
		return func(e *logEntry) string { return e.start.UTC().Format(layout) }, nil
	}
	simple := map[string]logPart{
		"PROTOCOL": func(e *logEntry) string {
			if e.req == nil {
				return "-"
			}
			return e.req.Proto
		},
		"RESPONSE_CODE": func(e *logEntry) string {
			if e.rw == nil {
				return "0"
			}
			return strconv.Itoa(e.rw.code)
		},
		"RESPONSE_FLAGS":                    func(e *logEntry) string { return dash(e.ri.ResponseFlags) },
		"RESPONSE_CODE_DETAILS":             func(e *logEntry) string { return responseDetails(e) },
		"CONNECTION_TERMINATION_DETAILS":    func(*logEntry) string { return "-" },
		"UPSTREAM_TRANSPORT_FAILURE_REASON": func(*logEntry) string { return "-" },
		"BYTES_RECEIVED":                    func(e *logEntry) string { return strconv.FormatInt(e.bytesIn, 10) },
		"BYTES_SENT": func(e *logEntry) string {
			if e.rw != nil {
				return strconv.FormatInt(e.rw.n, 10)
			}
			return strconv.FormatInt(e.bytesOut, 10)
		},
		"DURATION":                  func(e *logEntry) string { return strconv.FormatInt(e.dur.Milliseconds(), 10) },
		"UPSTREAM_HOST":             func(e *logEntry) string { return dash(e.ri.UpstreamHost) },
		"UPSTREAM_CLUSTER":          func(e *logEntry) string { return dash(e.ri.ClusterName) },
		"UPSTREAM_LOCAL_ADDRESS":    func(*logEntry) string { return "-" },
		"DOWNSTREAM_LOCAL_ADDRESS":  func(e *logEntry) string { return addrOrDash(e.ci, func(c *connInfo) string { return c.dst.String() }) },
		"DOWNSTREAM_REMOTE_ADDRESS": func(e *logEntry) string { return addrOrDash(e.ci, func(c *connInfo) string { return c.src.String() }) },
		"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": func(e *logEntry) string {
			return addrOrDash(e.ci, func(c *connInfo) string { return c.src.Addr().String() })
		},
		"DOWNSTREAM_PEER_URI_SAN": func(e *logEntry) string { return addrOrDash(e.ci, func(c *connInfo) string { return c.principal }) },
		"REQUESTED_SERVER_NAME":   func(e *logEntry) string { return addrOrDash(e.ci, func(c *connInfo) string { return c.sni }) },
		"ROUTE_NAME":              func(e *logEntry) string { return dash(e.ri.RouteName) },
		"UPSTREAM_SERVICE_TIME":   func(*logEntry) string { return "-" },
		"REQUEST_DURATION":        func(e *logEntry) string { return "-" },
		"RESPONSE_DURATION":       func(e *logEntry) string { return strconv.FormatInt(e.dur.Milliseconds(), 10) },
		"HOSTNAME": func(*logEntry) string {
			h, _ := os.Hostname()
			return dash(h)
		},
	}
	if p, ok := simple[op]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("access log operator %%%s%% is not supported", op)
}

func addrOrDash(ci *connInfo, f func(*connInfo) string) string {
	if ci == nil {
		return "-"
	}
	return dash(f(ci))
}

func responseDetails(e *logEntry) string {
	if e.rw == nil {
		return "-"
	}
	if e.rw.code == http.StatusForbidden && e.ri.ClusterName == "" {
		return "rbac_access_denied_matched_policy"
	}
	if e.ri.ClusterName != "" {
		return "via_upstream"
	}
	return "-"
}

func requestHeader(r *http.Request, name string) string {
	if r == nil {
		return ""
	}
	switch strings.ToLower(name) {
	case ":method":
		return r.Method
	case ":path":
		return r.URL.RequestURI()
	case ":authority", "host":
		return r.Host
	case ":scheme":
		if r.TLS != nil {
			return "https"
		}
		return "http"
	}
	return r.Header.Get(name)
}

// strftime converts the common strftime directives to a Go layout.
func strftime(f string) string {
	r := strings.NewReplacer("%Y", "2006", "%m", "01", "%d", "02", "%H", "15", "%M", "04", "%S", "05",
		"%3f", "000", "%6f", "000000", "%9f", "000000000", "%z", "-0700", "%Z", "MST", "%s", "")
	return r.Replace(f)
}
