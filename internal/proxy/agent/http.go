package agent

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

func (a *Agent) readyHandler(w http.ResponseWriter, _ *http.Request) {
	if err := a.Ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// healthHandler serves port 15021.
func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", a.readyHandler)
	return mux
}

// statsHandler serves port 15090.
func (a *Agent) statsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return mux
}

// statusHandler serves port 15020.
func (a *Agent) statusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", a.readyHandler)
	mux.HandleFunc("GET /app-health/{container}/{kind}", a.appHealth)
	mux.HandleFunc("GET /stats/prometheus", a.mergedStats)
	return mux
}

// adminHandler serves the admin port (loopback only).
func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Ready(); err != nil {
			http.Error(w, "PRE_INITIALIZING: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "LIVE")
	})
	mux.HandleFunc("GET /healthz/ready", a.readyHandler)
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		b, err := a.dp.ConfigDump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /stats", a.textStats)
	mux.Handle("GET /stats/prometheus", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	// Go's profiler, like Envoy's admin /cpuprofiler and /heapprofiler:
	// the admin port listens on loopback only.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("POST /quitquitquit", func(w http.ResponseWriter, r *http.Request) {
		a.quitOnce.Do(func() { close(a.quit) })
		fmt.Fprintln(w, "OK")
	})
	return mux
}

// textStats prints every series as "name{labels}: value", sorted.
func (a *Agent) textStats(w http.ResponseWriter, _ *http.Request) {
	mfs, err := a.reg.Gather()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName() + labelString(m.GetLabel())
			switch {
			case m.Counter != nil:
				lines = append(lines, fmt.Sprintf("%s: %g", name, m.GetCounter().GetValue()))
			case m.Gauge != nil:
				lines = append(lines, fmt.Sprintf("%s: %g", name, m.GetGauge().GetValue()))
			case m.Untyped != nil:
				lines = append(lines, fmt.Sprintf("%s: %g", name, m.GetUntyped().GetValue()))
			case m.Histogram != nil:
				h := m.GetHistogram()
				lines = append(lines, fmt.Sprintf("%s: count=%d sum=%g", name, h.GetSampleCount(), h.GetSampleSum()))
			case m.Summary != nil:
				s := m.GetSummary()
				lines = append(lines, fmt.Sprintf("%s: count=%d sum=%g", name, s.GetSampleCount(), s.GetSampleSum()))
			}
		}
	}
	sort.Strings(lines)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
	}
	return "{" + strings.Join(parts, ",") + "}"
}
