package validation

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// dnsLabel is one label of a host name (upper case allowed, as in Istio).
var dnsLabel = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$`)

// checkHost checks a host name: a DNS name, optionally with "*" as its
// whole first label ("*.example.com"), or "*" alone when star is true.
func checkHost(p *field.Path, host string, star bool, e *errorList) {
	if host == "" {
		e.add(p, "host must not be empty")
		return
	}
	if host == "*" {
		if !star {
			e.add(p, "wildcard host \"*\" is not allowed here")
		}
		return
	}
	if len(host) > 255 {
		e.add(p, "host %q is longer than 255 characters", host)
		return
	}
	name := strings.TrimSuffix(host, ".")
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if i == 0 && l == "*" {
			continue
		}
		if !dnsLabel.MatchString(l) {
			if strings.Contains(l, "*") {
				e.add(p, "invalid host %q: a wildcard must be the whole first label, as in \"*.example.com\"", host)
			} else {
				e.add(p, "invalid host %q: %q is not a valid DNS label", host, l)
			}
			return
		}
	}
}

// checkNamespacedHost checks "namespace/host" (Gateway and Sidecar hosts):
// namespace is "*", ".", "~" or a namespace name; requireNS says whether
// the "namespace/" part is mandatory.
func checkNamespacedHost(p *field.Path, v string, requireNS bool, e *errorList) {
	ns, host, found := strings.Cut(v, "/")
	if !found {
		if requireNS {
			e.add(p, "host %q must have the form namespace/dnsName", v)
			return
		}
		checkHost(p, v, true, e)
		return
	}
	switch ns {
	case "*", ".", "~":
	default:
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			e.add(p, "invalid namespace %q in %q: %s", ns, v, errs[0])
			return
		}
	}
	if ns == "~" {
		return
	}
	checkHost(p, host, true, e)
}

// checkExportTo checks the exportTo list shared by several kinds.
func checkExportTo(p *field.Path, list []string, e *errorList) {
	seen := map[string]bool{}
	for i, v := range list {
		ip := p.Index(i)
		switch v {
		case ".", "*", "~":
		default:
			if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
				e.add(ip, "%q must be \".\", \"*\", \"~\" or a namespace name: %s", v, errs[0])
			}
		}
		if seen[v] {
			e.add(ip, "duplicate %q", v)
		}
		seen[v] = true
	}
	if len(list) > 1 && (slices.Contains(list, "*") || slices.Contains(list, "~")) {
		e.add(p, "\"*\" and \"~\" must be the only entry")
	}
}

// checkLabels checks a label selector map: valid keys and values, no
// wildcards.
func checkLabels(p *field.Path, labels map[string]string, e *errorList) {
	for _, k := range sortedKeys(labels) {
		v := labels[k]
		kp := p.Key(k)
		if k == "" {
			e.add(kp, "label key must not be empty")
			continue
		}
		if strings.Contains(k, "*") || strings.Contains(v, "*") {
			e.add(kp, "wildcards are not allowed in label selectors")
			continue
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			e.add(kp, "invalid label key %q: %s", k, errs[0])
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			e.add(kp, "invalid label value %q: %s", v, errs[0])
		}
	}
}

// checkPort checks a port number (1-65535).
func checkPort(p *field.Path, n uint32, e *errorList) {
	if n < 1 || n > 65535 {
		e.add(p, "port %d must be between 1 and 65535", n)
	}
}

// checkOptionalPort checks a port that may be left 0 (unset).
func checkOptionalPort(p *field.Path, n uint32, e *errorList) {
	if n != 0 {
		checkPort(p, n, e)
	}
}

// checkRegex checks that re compiles as RE2, the syntax the proxy uses.
func checkRegex(p *field.Path, re string, e *errorList) {
	if re == "" {
		e.add(p, "regex must not be empty")
		return
	}
	if _, err := regexp.Compile(re); err != nil {
		e.add(p, "invalid regex %q: %s", re, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
}

// checkPercent checks a percentage (0-100).
func checkPercent(p *field.Path, v float64, e *errorList) {
	if v < 0 || v > 100 {
		e.add(p, "percentage %v must be between 0 and 100", v)
	}
}

// checkIPOrCIDR checks an IP address or a CIDR block.
func checkIPOrCIDR(p *field.Path, v string, e *errorList) {
	if strings.Contains(v, "/") {
		if _, err := netip.ParsePrefix(v); err != nil {
			e.add(p, "invalid CIDR %q", v)
		}
		return
	}
	if _, err := netip.ParseAddr(v); err != nil {
		e.add(p, "%q is neither an IP address nor a CIDR block", v)
	}
}

// checkName checks a name that must be a DNS-1123 label (subset and port
// names).
func checkName(p *field.Path, what, v string, e *errorList) {
	if v == "" {
		e.add(p, "%s must not be empty", what)
		return
	}
	if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
		e.add(p, "invalid %s %q: %s", what, v, errs[0])
	}
}

// checkHeaderName checks an HTTP header name (an RFC 9110 token), which
// Istio requires in lower case.
func checkHeaderName(p *field.Path, name string, e *errorList) {
	if name == "" {
		e.add(p, "header name must not be empty")
		return
	}
	for _, r := range name {
		if !isTokenChar(r) {
			e.add(p, "invalid header name %q", name)
			return
		}
	}
	if strings.ToLower(name) != name {
		e.add(p, "header name %q must be lower case", name)
	}
}

func isTokenChar(r rune) bool {
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

// protocols are the port protocols Istio knows (case-insensitive).
var protocols = []string{"HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS", "UDP", "HTTP_PROXY", "HBONE"}

func checkProtocol(p *field.Path, v string, e *errorList) {
	if !slices.Contains(protocols, strings.ToUpper(v)) {
		e.add(p, "unknown protocol %q, must be one of %s", v, strings.Join(protocols, ", "))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
