package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsLabels: after mesh traffic, both proxies report Istio's
// standard metrics with the labels Kiali and Istio's dashboards query.
func TestMetricsLabels(t *testing.T) {
	ns := namespace(t, "metrics")
	sleep, bin, outbound, host := httpbin(t, ns)
	eventually(t, "mesh client", func() error { return expect(outbound+"/get", host, 200) })
	for range 10 {
		if err := expect(outbound+"/get", host, 200); err != nil {
			t.Fatal(err)
		}
	}
	svc := "httpbin." + ns + ".svc.cluster.local"
	want := map[string]string{
		"source_workload":                "sleep",
		"source_workload_namespace":      ns,
		"source_canonical_service":       "sleep",
		"destination_workload":           "httpbin",
		"destination_workload_namespace": ns,
		"destination_service":            svc,
		"destination_service_name":       "httpbin",
		"destination_service_namespace":  ns,
		"destination_canonical_service":  "httpbin",
		"destination_version":            "v1",
		"request_protocol":               "http",
		"response_code":                  "200",
	}
	check := func(url, reporter, security string) {
		t.Helper()
		eventually(t, reporter+" metrics", func() error {
			fams, err := scrape(url)
			if err != nil {
				return err
			}
			for _, name := range []string{"istio_requests_total", "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
				if _, ok := fams[name]; !ok {
					return fmt.Errorf("no %s", name)
				}
			}
			w := map[string]string{"reporter": reporter}
			for k, v := range want {
				w[k] = v
			}
			if security != "" {
				w["connection_security_policy"] = security
			}
			var total float64
			for _, s := range fams["istio_requests_total"] {
				if matches(s.Metric, w) {
					total += float64(s.Value)
				}
			}
			if total < 10 {
				return fmt.Errorf("istio_requests_total with %v: %v (series: %v)", w, total, fams["istio_requests_total"])
			}
			return nil
		})
	}
	check(sleep.StatsURL(), "source", "unknown")
	check(bin.StatsURL(), "destination", "mutual_tls")
}

func matches(m model.Metric, want map[string]string) bool {
	for k, v := range want {
		if string(m[model.LabelName(k)]) != v {
			return false
		}
	}
	return true
}

// scrape reads a Prometheus text endpoint into samples per family.
func scrape(url string) (map[string]model.Vector, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := expfmt.SampleDecoder{Dec: expfmt.NewDecoder(resp.Body, expfmt.NewFormat(expfmt.TypeTextPlain)), Opts: &expfmt.DecodeOptions{}}
	out := map[string]model.Vector{}
	for {
		var v model.Vector
		if err := dec.Decode(&v); err != nil {
			if strings.Contains(err.Error(), "EOF") {
				break
			}
			return nil, err
		}
		for _, s := range v {
			name := string(s.Metric[model.MetricNameLabel])
			name = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			out[name] = append(out[name], s)
		}
	}
	return out, nil
}
