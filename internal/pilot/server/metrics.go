package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mizzen-mesh/mizzen/internal/xds"
)

// metrics are the control plane's xDS metrics, named as Istio's pilot names
// them so that existing dashboards work.
type metrics struct {
	pushes         *prometheus.CounterVec
	pushTime       prometheus.Histogram
	connected      prometheus.Gauge
	convergence    prometheus.Histogram
	rejects        *prometheus.CounterVec
	internalErrors prometheus.Counter
}

// typeLabel is the short name of a type URL used as metric label.
func typeLabel(typeURL string) string {
	switch typeURL {
	case xds.ClusterType:
		return "cds"
	case xds.EndpointType:
		return "eds"
	case xds.ListenerType:
		return "lds"
	case xds.RouteType:
		return "rds"
	case xds.SecretType:
		return "sds"
	}
	return "other"
}

var metricTypes = []string{"cds", "eds", "lds", "rds", "sds"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes",
			Help: "xDS responses sent to proxies, by type.",
		}, []string{"type"}),
		pushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_xds_push_time",
			Help:    "Seconds spent generating and queueing one proxy's configuration.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_xds",
			Help: "Connected xDS streams.",
		}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_proxy_convergence_time",
			Help:    "Seconds from the first change of a debounced batch until every connected proxy's new configuration was queued.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_rejects",
			Help: "xDS responses proxies rejected (NACK), by type.",
		}, []string{"type"}),
		internalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pilot_total_xds_internal_errors",
			Help: "Internal errors while generating or sending xDS configuration.",
		}),
	}
	for _, t := range metricTypes {
		m.pushes.WithLabelValues(t)
		m.rejects.WithLabelValues(t)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pushes, m.pushTime, m.connected, m.convergence, m.rejects, m.internalErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
