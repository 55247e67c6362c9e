package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Metrics merging. The injector points the pod's prometheus.io annotations
// at the status port (15020, /stats/prometheus) and saves the app's own in
// $ISTIO_PROMETHEUS_ANNOTATIONS; one scrape of the pod then returns the
// proxy's metrics followed by the app's, so a Prometheus that scrapes
// annotated pods collects both.

// EnvPrometheusAnnotations carries the app's prometheus.io annotations.
const EnvPrometheusAnnotations = "ISTIO_PROMETHEUS_ANNOTATIONS"

// maxAppMetrics bounds what is read from the app per scrape.
const maxAppMetrics = 64 << 20

// AppScrape is the app's own scrape settings.
type AppScrape struct {
	Scrape string `json:"scrape,omitempty"`
	Path   string `json:"path,omitempty"`
	Port   string `json:"port,omitempty"`
	Scheme string `json:"scheme,omitempty"`
}

// ParseAppScrape parses $ISTIO_PROMETHEUS_ANNOTATIONS ("" = nothing to
// merge). It returns nil when the app asks not to be scraped.
func ParseAppScrape(s string) (*AppScrape, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var sc AppScrape
	if err := json.Unmarshal([]byte(s), &sc); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvPrometheusAnnotations, err)
	}
	if sc.Scrape != "true" {
		return nil, nil
	}
	if sc.Port == "" {
		return nil, nil // Prometheus would scrape the pod's declared ports; nothing to follow
	}
	if n, err := strconv.Atoi(sc.Port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%s: port %q is not a port number", EnvPrometheusAnnotations, sc.Port)
	}
	if sc.Path == "" {
		sc.Path = "/metrics"
	}
	switch strings.ToLower(sc.Scheme) {
	case "", "http", "https":
	default:
		return nil, fmt.Errorf("%s: scheme %q is not http or https", EnvPrometheusAnnotations, sc.Scheme)
	}
	return &sc, nil
}

type scrapeCounters struct {
	scrapes  prometheus.Counter
	failures *prometheus.CounterVec
}

func newScrapeCounters() *scrapeCounters {
	return &scrapeCounters{
		scrapes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "istio_agent_scrapes_total", Help: "Scrapes of the merged metrics endpoint.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_agent_scrape_failures_total", Help: "Failed parts of merged scrapes, by part (application, proxy).",
		}, []string{"type"}),
	}
}

// mergedStats serves the status port's /stats/prometheus: the proxy's
// metrics in the text format (the Go runtime's and the process's renamed
// istio_agent_*, so that they never collide with an app's own), then the
// app's as it served them. An app that cannot be scraped costs only its
// part: the proxy's metrics are still served.
func (a *Agent) mergedStats(w http.ResponseWriter, r *http.Request) {
	a.scrapes.scrapes.Inc()
	// The app first, so that a failure shows in this very scrape's counters.
	var app bytes.Buffer
	if a.appScrape != nil {
		if err := a.appendAppMetrics(r.Context(), &app, scrapeTimeout(r)); err != nil {
			a.scrapes.failures.WithLabelValues("application").Inc()
			a.log.Debug("scraping the application's metrics", "err", err)
		}
	}
	var buf bytes.Buffer
	if err := a.writeOwnMetrics(&buf); err != nil {
		a.scrapes.failures.WithLabelValues("proxy").Inc()
		a.log.Debug("gathering the proxy's metrics", "err", err)
	}
	buf.Write(app.Bytes())
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	_, _ = w.Write(buf.Bytes())
}

func (a *Agent) writeOwnMetrics(w io.Writer) error {
	mfs, err := a.reg.Gather()
	for _, mf := range mfs {
		if name := mf.GetName(); strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			mf = proto.Clone(mf).(*dto.MetricFamily)
			mf.Name = proto.String("istio_agent_" + name)
		}
		if _, werr := expfmt.MetricFamilyToText(w, mf); werr != nil {
			return werr
		}
	}
	return err
}

// scrapeTimeout is Prometheus's own deadline for the scrape, less a
// margin; 5 s when not told.
func scrapeTimeout(r *http.Request) time.Duration {
	if v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
			return time.Duration(s*float64(time.Second)) * 9 / 10
		}
	}
	return 5 * time.Second
}

// appendAppMetrics scrapes the app in the text format and appends what it
// served; an OpenMetrics answer loses its "# EOF" terminator (the merged
// document is in the text format, and the rest is compatible).
func (a *Agent) appendAppMetrics(ctx context.Context, w *bytes.Buffer, timeout time.Duration) error {
	sc := a.appScrape
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	g := &HTTPGet{Path: sc.Path, Port: json.Number(sc.Port), Scheme: sc.Scheme,
		HTTPHeaders: []HTTPHeader{{Name: "Accept", Value: "text/plain;version=0.0.4;q=1,*/*;q=0.1"}}}
	resp, err := a.appGet(ctx, g, timeout, "mizzen-proxy/metrics-merge")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the app answered %s", resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/vnd.google.protobuf" {
		return fmt.Errorf("the app answered in the protobuf format although text was asked for")
	}
	start := w.Len()
	sc2 := bufio.NewScanner(io.LimitReader(resp.Body, maxAppMetrics))
	sc2.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc2.Scan() {
		line := sc2.Bytes()
		if bytes.Equal(bytes.TrimSpace(line), []byte("# EOF")) {
			continue
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := sc2.Err(); err != nil {
		w.Truncate(start) // never half an app's document
		return err
	}
	return nil
}
