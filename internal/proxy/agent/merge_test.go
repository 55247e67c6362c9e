package agent

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestParseAppScrape(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    *AppScrape
		wantErr string
	}{
		{in: ""},
		{in: `{"scrape":"false","port":"8080"}`},
		{in: `{"scrape":"true"}`},
		{in: `{"scrape":"true","port":"8080"}`, want: &AppScrape{Scrape: "true", Port: "8080", Path: "/metrics"}},
		{in: `{"scrape":"true","port":"9090","path":"/m","scheme":"https"}`, want: &AppScrape{Scrape: "true", Port: "9090", Path: "/m", Scheme: "https"}},
		{in: `{"scrape":"true","port":"http"}`, wantErr: `port "http"`},
		{in: `{"scrape":"true","port":"8080","scheme":"ftp"}`, wantErr: `scheme "ftp"`},
		{in: `{scrape}`, wantErr: EnvPrometheusAnnotations},
	} {
		got, err := ParseAppScrape(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want one naming %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// The status port's /stats/prometheus serves the proxy's metrics and the
// app's in one valid text document; the proxy's Go runtime metrics are
// renamed so that they never collide with the app's.
func TestMergedMetrics(t *testing.T) {
	appUp := true
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/custom" || !appUp {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
		fmt.Fprint(w, "# HELP go_goroutines app goroutines\n# TYPE go_goroutines gauge\ngo_goroutines 7\n# TYPE app_orders counter\napp_orders_total 42\n# EOF\n")
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app.Listener = ln
	app.Start()
	defer app.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	r := start(t, "", fmt.Sprintf(`%s={"scrape":"true","port":"%d","path":"/custom"}`, EnvPrometheusAnnotations, port))
	families := func() map[string]float64 {
		t.Helper()
		code, body := r.get(t, r.addrs.Status, "/stats/prometheus")
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("merged document does not parse: %v\n%s", err, body)
		}
		out := map[string]float64{}
		for name, mf := range mfs {
			for _, m := range mf.GetMetric() {
				out[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			}
		}
		return out
	}
	got := families()
	if got["go_goroutines"] != 7 || got["app_orders_total"] != 42 {
		t.Errorf("app metrics missing: go_goroutines=%v app_orders_total=%v", got["go_goroutines"], got["app_orders_total"])
	}
	if _, ok := got["istio_agent_go_goroutines"]; !ok {
		t.Error("the proxy's go_goroutines is not renamed istio_agent_go_goroutines")
	}
	if _, ok := got["istio_agent_scrapes_total"]; !ok {
		t.Error("istio_agent_scrapes_total missing")
	}

	// The app failing costs only its part.
	appUp = false
	got = families()
	if _, ok := got["app_orders_total"]; ok {
		t.Error("app metrics served while the app fails")
	}
	if got["istio_agent_scrape_failures_total"] < 1 {
		t.Errorf("istio_agent_scrape_failures_total = %v, want >= 1", got["istio_agent_scrape_failures_total"])
	}
	// 15090 stays the proxy's own registry.
	if code, body := r.get(t, r.addrs.Stats, "/stats/prometheus"); code != http.StatusOK || strings.Contains(body, "app_orders") {
		t.Errorf("15090: %d, app metrics present=%v", code, strings.Contains(body, "app_orders"))
	}
}
