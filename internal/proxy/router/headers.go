package router

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerOp is one compiled HeaderValueOption.
type headerOp struct {
	name   string // canonical; ":authority" for Host
	value  []fmtSegment
	action corev3.HeaderValueOption_HeaderAppendAction
	keep   bool // keep_empty_value
}

// headerMutation is one level's headers_to_add and headers_to_remove.
type headerMutation struct {
	remove []string
	add    []headerOp
}

func (m headerMutation) empty() bool { return len(m.remove) == 0 && len(m.add) == 0 }

func compileMutation(add []*corev3.HeaderValueOption, remove []string) (headerMutation, error) {
	var m headerMutation
	for _, r := range remove {
		if r == "" {
			return m, fmt.Errorf("empty header name to remove")
		}
		m.remove = append(m.remove, canonical(r))
	}
	for _, o := range add {
		key := o.GetHeader().GetKey()
		if key == "" {
			return m, fmt.Errorf("header to add without a key")
		}
		val := o.GetHeader().GetValue()
		if len(o.GetHeader().GetRawValue()) > 0 {
			val = string(o.GetHeader().GetRawValue())
		}
		segs, err := compileFormat(val)
		if err != nil {
			return m, fmt.Errorf("header %q: %w", key, err)
		}
		op := headerOp{name: canonical(key), value: segs, action: o.GetAppendAction(), keep: o.GetKeepEmptyValue()}
		if a := o.GetAppend(); a != nil { // deprecated bool: true appends, false overwrites
			if a.GetValue() {
				op.action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			} else {
				op.action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		if strings.HasPrefix(key, ":") && key != ":authority" {
			return m, fmt.Errorf("header %q: only :authority may be set among pseudo headers", key)
		}
		m.add = append(m.add, op)
	}
	return m, nil
}

func canonical(name string) string {
	if name == ":authority" || strings.EqualFold(name, "host") {
		return ":authority"
	}
	return http.CanonicalHeaderKey(name)
}

// fmtContext supplies the values of %COMMAND% operators.
type fmtContext struct {
	r            *http.Request
	upstreamAddr string
}

// apply runs the mutation on h (the request's Host is in *host).
func (m headerMutation) apply(h http.Header, host *string, fc *fmtContext) {
	for _, name := range m.remove {
		if name == ":authority" {
			continue // Envoy never removes :authority
		}
		h.Del(name)
	}
	for _, op := range m.add {
		v := render(op.value, fc)
		if v == "" && !op.keep {
			continue
		}
		if op.name == ":authority" {
			if host != nil {
				if op.action != corev3.HeaderValueOption_ADD_IF_ABSENT || *host == "" {
					*host = v
				}
			}
			continue
		}
		_, exists := h[op.name]
		switch op.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h[op.name] = append(h[op.name], v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h[op.name] = []string{v}
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h[op.name] = []string{v}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h[op.name] = []string{v}
			}
		}
	}
}

// fmtSegment is literal text or one supported command operator.
type fmtSegment struct {
	lit string
	cmd string // "" for literal
	arg string
}

var fmtCommands = map[string]bool{
	"DOWNSTREAM_REMOTE_ADDRESS":              true,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": true,
	"DOWNSTREAM_LOCAL_ADDRESS":               true,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":  true,
	"UPSTREAM_REMOTE_ADDRESS":                true,
	"PROTOCOL":                               true,
	"HOSTNAME":                               true,
	"REQ":                                    true,
}

// compileFormat parses Envoy's header value format: "%%" is a percent
// sign, %COMMAND% and %REQ(name)% are substituted; unknown operators are
// an error (NACK) rather than sent verbatim.
func compileFormat(s string) ([]fmtSegment, error) {
	if !strings.Contains(s, "%") {
		return []fmtSegment{{lit: s}}, nil
	}
	var out []fmtSegment
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i++
			continue
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return nil, fmt.Errorf("unterminated %% operator in %q", s)
		}
		op := s[i+1 : i+1+j]
		cmd, arg := op, ""
		if k := strings.IndexByte(op, '('); k >= 0 && strings.HasSuffix(op, ")") {
			cmd, arg = op[:k], op[k+1:len(op)-1]
			if k := strings.IndexByte(arg, ')'); k >= 0 {
				arg = arg[:k]
			}
		}
		if !fmtCommands[cmd] || (cmd == "REQ") != (arg != "") {
			return nil, fmt.Errorf("header value operator %%%s%% is not supported", op)
		}
		if lit.Len() > 0 {
			out = append(out, fmtSegment{lit: lit.String()})
			lit.Reset()
		}
		out = append(out, fmtSegment{cmd: cmd, arg: arg})
		i += j + 1
	}
	if lit.Len() > 0 {
		out = append(out, fmtSegment{lit: lit.String()})
	}
	return out, nil
}

func render(segs []fmtSegment, fc *fmtContext) string {
	if len(segs) == 1 && segs[0].cmd == "" {
		return segs[0].lit
	}
	var b strings.Builder
	for _, s := range segs {
		if s.cmd == "" {
			b.WriteString(s.lit)
			continue
		}
		b.WriteString(fc.value(s.cmd, s.arg))
	}
	return b.String()
}

func (fc *fmtContext) value(cmd, arg string) string {
	if fc == nil || fc.r == nil {
		return ""
	}
	switch cmd {
	case "DOWNSTREAM_REMOTE_ADDRESS":
		return fc.r.RemoteAddr
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		return hostOnly(fc.r.RemoteAddr)
	case "DOWNSTREAM_LOCAL_ADDRESS", "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		if a, ok := fc.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if cmd == "DOWNSTREAM_LOCAL_ADDRESS" {
				return a.String()
			}
			return hostOnly(a.String())
		}
	case "UPSTREAM_REMOTE_ADDRESS":
		return fc.upstreamAddr
	case "PROTOCOL":
		return fc.r.Proto
	case "HOSTNAME":
		h, _ := os.Hostname()
		return h
	case "REQ":
		name, _, _ := strings.Cut(arg, "?")
		if strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host") {
			return fc.r.Host
		}
		if name == ":path" {
			return fc.r.URL.RequestURI()
		}
		if name == ":method" {
			return fc.r.Method
		}
		return fc.r.Header.Get(name)
	}
	return ""
}

func hostOnly(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
