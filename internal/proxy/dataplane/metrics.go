package dataplane

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// labelNames is Istio's standard metric label set, in Istio's order.
var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// durationBuckets are Istio's buckets for istio_request_duration_milliseconds.
var durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// byteBuckets are Istio's buckets for request and response sizes.
var byteBuckets = prometheus.ExponentialBuckets(1, 10, 9)

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	reqBytes    *prometheus.HistogramVec
	respBytes   *prometheus.HistogramVec
	tcpSent     *prometheus.CounterVec
	tcpReceived *prometheus.CounterVec
	tcpOpened   *prometheus.CounterVec
	tcpClosed   *prometheus.CounterVec

	// series caches the four HTTP series of each label set (keyed by
	// the joined values), so a request costs one map lookup instead of
	// hashing Istio's 25 labels four times; the key is joined in a pooled
	// buffer, so a hit allocates nothing.
	seriesMu sync.RWMutex
	series   map[string]*httpSeries
}

// numLabels is len(labelNames) (TestLabelCount).
const numLabels = 25

var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// httpSeries are the HTTP metrics of one label set.
type httpSeries struct {
	requests                      prometheus.Counter
	duration, reqBytes, respBytes prometheus.Observer
}

// httpSeriesFor returns the series of the label values.
func (m *metrics) httpSeriesFor(vals *[numLabels]string) *httpSeries {
	bp := keyBufs.Get().(*[]byte)
	key := (*bp)[:0]
	for _, v := range vals {
		key = append(key, v...)
		key = append(key, 0xff)
	}
	m.seriesMu.RLock()
	s := m.series[string(key)]
	m.seriesMu.RUnlock()
	if s == nil {
		m.seriesMu.Lock()
		if s = m.series[string(key)]; s == nil {
			vs := vals[:]
			s = &httpSeries{
				requests:  m.requests.WithLabelValues(vs...),
				duration:  m.duration.WithLabelValues(vs...),
				reqBytes:  m.reqBytes.WithLabelValues(vs...),
				respBytes: m.respBytes.WithLabelValues(vs...),
			}
			m.series[string(key)] = s
		}
		m.seriesMu.Unlock()
	}
	*bp = key
	keyBufs.Put(bp)
	return s
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		series:      map[string]*httpSeries{},
		requests:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "Requests served, by Istio's standard labels."}, labelNames),
		duration:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds", Help: "Request duration in milliseconds.", Buckets: durationBuckets}, labelNames),
		reqBytes:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_bytes", Help: "Request sizes in bytes (headers and body).", Buckets: byteBuckets}, labelNames),
		respBytes:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_response_bytes", Help: "Response sizes in bytes (headers and body).", Buckets: byteBuckets}, labelNames),
		tcpSent:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent to the downstream on TCP connections."}, labelNames),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_received_bytes_total", Help: "Bytes received from the downstream on TCP connections."}, labelNames),
		tcpOpened:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened."}, labelNames),
		tcpClosed:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed."}, labelNames),
	}
	if reg == nil {
		return m, nil
	}
	// Several data planes may share one registry (tests); reuse what is
	// there.
	register := func(c prometheus.Collector) (prometheus.Collector, error) {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return are.ExistingCollector, nil
			}
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
		return c, nil
	}
	for _, p := range []*prometheus.CounterVec{m.requests, m.tcpSent, m.tcpReceived, m.tcpOpened, m.tcpClosed} {
		c, err := register(p)
		if err != nil {
			return nil, err
		}
		*p = *c.(*prometheus.CounterVec)
	}
	for _, p := range []*prometheus.HistogramVec{m.duration, m.reqBytes, m.respBytes} {
		c, err := register(p)
		if err != nil {
			return nil, err
		}
		*p = *c.(*prometheus.HistogramVec)
	}
	return m, nil
}

// Reporter kinds of the istio.stats filter.
const (
	reporterInbound  = "SIDECAR_INBOUND"
	reporterOutbound = "SIDECAR_OUTBOUND"
	reporterGateway  = "GATEWAY"
)

// statsConfig is the istio.stats filter's configuration.
type statsConfig struct {
	reporter string
}

func (s *statsConfig) inbound() bool { return s.reporter == reporterInbound }

const statsTypeURL = "type.mizzen.dev/stats"

func parseStatsConfig(a *anypb.Any) (*statsConfig, error) {
	ts := &xdstype.TypedStruct{}
	if err := anyTo(a, ts); err != nil {
		return nil, err
	}
	if ts.GetTypeUrl() != statsTypeURL {
		return nil, fmt.Errorf("type_url %q is not %s", ts.GetTypeUrl(), statsTypeURL)
	}
	r := ts.GetValue().GetFields()["reporter"].GetStringValue()
	switch r {
	case reporterInbound, reporterOutbound, reporterGateway:
	default:
		return nil, fmt.Errorf("reporter %q is not one of %s, %s, %s", r, reporterInbound, reporterOutbound, reporterGateway)
	}
	return &statsConfig{reporter: r}, nil
}

// peer is one side of a request as telemetry labels see it.
type peer struct {
	Name, Namespace, Workload, ClusterID, ServiceAccount string
	Labels                                               map[string]string
}

func nodePeer(n *config.Node) *peer {
	return &peer{Name: n.PodName, Namespace: n.Namespace, Workload: n.WorkloadName, ClusterID: n.ClusterID, ServiceAccount: n.ServiceAccount, Labels: n.Labels}
}

func (p *peer) canonicalService() string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := p.Labels[k]; v != "" {
			return v
		}
	}
	return p.Workload
}

func (p *peer) canonicalRevision() string {
	for _, k := range []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"} {
		if v := p.Labels[k]; v != "" {
			return v
		}
	}
	return "latest"
}

func (p *peer) app() string {
	if v := p.Labels["app"]; v != "" {
		return v
	}
	return p.Labels["app.kubernetes.io/name"]
}

func (p *peer) version() string {
	if v := p.Labels["version"]; v != "" {
		return v
	}
	return p.Labels["app.kubernetes.io/version"]
}

// Peer metadata exchange headers (docs/xds.md).
const (
	hdrPeerMetadata   = "X-Envoy-Peer-Metadata"
	hdrPeerMetadataID = "X-Envoy-Peer-Metadata-Id"
)

// encodePeer is the x-envoy-peer-metadata value: base64 of a protobuf
// Struct.
func encodePeer(p *peer) string {
	labels := map[string]any{}
	for k, v := range p.Labels {
		labels[k] = v
	}
	s, err := structpb.NewStruct(map[string]any{
		"NAME": p.Name, "NAMESPACE": p.Namespace, "WORKLOAD_NAME": p.Workload,
		"CLUSTER_ID": p.ClusterID, "SERVICE_ACCOUNT": p.ServiceAccount, "LABELS": labels,
	})
	if err != nil {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

// peerCache keeps decoded peer metadata by header value: a workload's
// peers send the same few values on every request. It is emptied when it
// grows past peerCacheMax entries.
var (
	peerCache     sync.Map // string -> *peer
	peerCacheSize atomic.Int64
)

const peerCacheMax = 4096

// decodePeer decodes an x-envoy-peer-metadata value (cached; the peer
// returned is shared and must not be modified).
func decodePeer(v string) (*peer, error) {
	if p, ok := peerCache.Load(v); ok {
		return p.(*peer), nil
	}
	p, err := decodePeerValue(v)
	if err != nil {
		return nil, err
	}
	if peerCacheSize.Add(1) > peerCacheMax {
		peerCache.Clear()
		peerCacheSize.Store(1)
	}
	peerCache.Store(v, p)
	return p, nil
}

func decodePeerValue(v string) (*peer, error) {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("peer metadata: %w", err)
	}
	s := &structpb.Struct{}
	if err := proto.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("peer metadata: %w", err)
	}
	f := s.GetFields()
	p := &peer{
		Name: f["NAME"].GetStringValue(), Namespace: f["NAMESPACE"].GetStringValue(),
		Workload: f["WORKLOAD_NAME"].GetStringValue(), ClusterID: f["CLUSTER_ID"].GetStringValue(),
		ServiceAccount: f["SERVICE_ACCOUNT"].GetStringValue(), Labels: map[string]string{},
	}
	for k, lv := range f["LABELS"].GetStructValue().GetFields() {
		p.Labels[k] = lv.GetStringValue()
	}
	return p, nil
}

// statLabels are the values of one observation.
type statLabels struct {
	reporter                   string // "source" or "destination"
	src, dst                   *peer
	srcPrincipal, dstPrincipal string
	service                    ClusterInfo
	protocol                   string
	code, grpcStatus, flags    string
	security                   string
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (l *statLabels) values() []string {
	var vals [numLabels]string
	l.fill(&vals)
	return vals[:]
}

// fill puts the label values in labelNames' order into vals.
func (l *statLabels) fill(vals *[numLabels]string) {
	// side is one peer's workload, namespace, principal, app, version,
	// canonical service, canonical revision and cluster.
	side := func(p *peer, principal string) (out [8]string) {
		if p == nil {
			return [8]string{"unknown", "unknown", orUnknown(principal), "unknown", "unknown", "unknown", "unknown", "unknown"}
		}
		return [8]string{orUnknown(p.Workload), orUnknown(p.Namespace), orUnknown(principal), orUnknown(p.app()), orUnknown(p.version()),
			orUnknown(p.canonicalService()), orUnknown(p.canonicalRevision()), orUnknown(p.ClusterID)}
	}
	vals[0] = l.reporter
	s := side(l.src, l.srcPrincipal)
	copy(vals[1:9], s[:])
	d := side(l.dst, l.dstPrincipal)
	// destination_* order: workload, namespace, principal, app, version,
	// service, service_name, service_namespace, canonical service and
	// revision, cluster.
	flags := l.flags
	if flags == "" {
		flags = "-"
	}
	*vals = [numLabels]string{vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6], vals[7], vals[8],
		d[0], d[1], d[2], d[3], d[4],
		orUnknown(l.service.ServiceHost), orUnknown(l.service.ServiceName), orUnknown(l.service.ServiceNamespace),
		d[5], d[6], d[7],
		orUnknown(l.protocol), orUnknown(l.code), orUnknown(l.grpcStatus), flags, orUnknown(l.security)}
}

// principalOf builds a peer's SPIFFE identity.
func principalOf(td string, p *peer) string {
	if p == nil || p.Namespace == "" || p.ServiceAccount == "" {
		return ""
	}
	if td == "" {
		td = "cluster.local"
	}
	return "spiffe://" + td + "/ns/" + p.Namespace + "/sa/" + p.ServiceAccount
}

// peerFromPrincipal fills namespace from a SPIFFE identity when no peer
// metadata came with the connection (TCP over mTLS).
func peerFromPrincipal(principal string) *peer {
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return nil
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return nil
	}
	return &peer{Namespace: parts[2], ServiceAccount: parts[4]}
}
