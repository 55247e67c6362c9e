package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Prober is one of the app's original HTTP probes, as the injector writes
// them into $ISTIO_KUBE_APP_PROBERS (a JSON object keyed by
// "/app-health/<container>/<livez|readyz|startupz>").
type Prober struct {
	HTTPGet        *HTTPGet `json:"httpGet"`
	TimeoutSeconds int32    `json:"timeoutSeconds,omitempty"`
}

// HTTPGet is the Kubernetes HTTPGetAction subset the status port replays.
type HTTPGet struct {
	Path        string       `json:"path,omitempty"`
	Port        json.Number  `json:"port"` // always a number: the injector resolves named ports
	Host        string       `json:"host,omitempty"`
	Scheme      string       `json:"scheme,omitempty"`
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
}

// HTTPHeader is a header a probe sends.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ParseProbers parses $ISTIO_KUBE_APP_PROBERS ("" = none).
func ParseProbers(s string) (map[string]Prober, error) {
	out := map[string]Prober{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("ISTIO_KUBE_APP_PROBERS: %w", err)
	}
	for path, p := range out {
		if p.HTTPGet == nil {
			return nil, fmt.Errorf("ISTIO_KUBE_APP_PROBERS: %s has no httpGet", path)
		}
		if n, err := strconv.Atoi(p.HTTPGet.Port.String()); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("ISTIO_KUBE_APP_PROBERS: %s: port %q is not a number", path, p.HTTPGet.Port)
		}
	}
	return out, nil
}

// appHealth replays the app's probe for /app-health/<container>/<kind>
// and answers with the app's status (kubelet judges 200-399 success), or
// 500 when the app cannot be reached.
func (a *Agent) appHealth(w http.ResponseWriter, r *http.Request) {
	p, ok := a.probers[r.URL.Path]
	if !ok {
		http.Error(w, "no probe registered for "+r.URL.Path, http.StatusNotFound)
		return
	}
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	status, err := a.probe(r.Context(), p.HTTPGet, timeout)
	if err != nil {
		http.Error(w, "probe failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
}

// probe sends the app's probe and returns the app's status.
func (a *Agent) probe(ctx context.Context, g *HTTPGet, timeout time.Duration) (int, error) {
	resp, err := a.appGet(ctx, g, timeout, "kube-probe/mizzen")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	return resp.StatusCode, nil
}

// appGet sends a GET to the app, as the kubelet would. The target is g's
// host or the pod IP, else localhost. Towards the pod IP the connection
// leaves from 127.0.0.6 (IPv6: ::6, which "proxy init" puts on lo), which
// the capture rules never redirect to the proxy's inbound side.
func (a *Agent) appGet(ctx context.Context, g *HTTPGet, timeout time.Duration, userAgent string) (*http.Response, error) {
	host := g.Host
	if host == "" {
		host = a.podIP
	}
	if host == "" {
		host = "localhost"
	}
	scheme := strings.ToLower(g.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(host, g.Port.String()) + path
	dialer := &net.Dialer{Timeout: timeout}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsLoopback() && host == a.podIP {
		// The inbound passthrough sources "proxy init" never captures.
		if ip.Is4() {
			dialer.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 6)}
		} else {
			dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP("::6")}
		}
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true,
			// The kubelet does not verify the app's certificate either.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // probes, like the kubelet's
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	return client.Do(req)
}
