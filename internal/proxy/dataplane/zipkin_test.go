package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// A Zipkin provider (what pilot sends for meshConfig's zipkin extension
// providers) exports the spans as Zipkin v2 JSON to the collector cluster,
// with the trace the request carried.
func TestTracingZipkin(t *testing.T) { forEngines(t, testTracingZipkin) }

func testTracingZipkin(t *testing.T, engine Engine) {
	var (
		mu    sync.Mutex
		spans []zipkinSpan
		hosts []string
	)
	zl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	zs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []zipkinSpan
		if r.URL.Path != "/api/v2/spans" || r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&batch) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		spans = append(spans, batch...)
		hosts = append(hosts, r.Host)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	})}
	go zs.Serve(zl)
	defer zs.Close()

	app := backend(t, "app")
	port := freePort(t)
	zc := &tracev3.ZipkinConfig{CollectorCluster: "zipkin", CollectorEndpoint: "/api/v2/spans",
		CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, CollectorHostname: "zipkin.istio-system.svc.cluster.local", TraceId_128Bit: true}
	hc := rds("r")
	hc.Tracing = &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 100},
		Provider: &tracev3.Tracing_Http{Name: zipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(t, zc)}}}
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Clusters["zipkin"] = staticCluster("zipkin", zl.Addr().String())
	snap.Routes["r"] = routeTo("r", "app")
	snap.Routes["r"].VirtualHosts[0].Routes[0].Decorator = &route.Decorator{Operation: "reviews-op"}
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, hc)}})
	d := newDP(t, Options{Engine: engine})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "traceparent", "00-"+tid+"-00f067aa0ba902b7-01")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Drain(ctx); err != nil { // flushes the batcher
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(spans) != 1 {
		t.Fatalf("exported %d spans: %+v", len(spans), spans)
	}
	s := spans[0]
	if s.TraceID != tid || s.ParentID != "00f067aa0ba902b7" || s.Name != "reviews-op" || s.Kind != "SERVER" ||
		s.Duration < 1 || time.Since(time.UnixMicro(s.Timestamp)) > time.Minute {
		t.Errorf("span %+v", s)
	}
	if s.Tags["http.status_code"] != "200" || s.Tags["http.method"] != "GET" {
		t.Errorf("tags %v", s.Tags)
	}
	if s.LocalEndpoint == nil || !strings.Contains(s.LocalEndpoint.ServiceName, ".") {
		t.Errorf("local endpoint %+v", s.LocalEndpoint)
	}
	if hosts[0] != "zipkin.istio-system.svc.cluster.local" {
		t.Errorf("Host %q", hosts[0])
	}
}

// A collector endpoint version the proxy does not speak is refused (NACK)
// rather than silently dropping spans.
func TestTracingZipkinProtoRefused(t *testing.T) {
	d := newDP(t, Options{})
	zc := &tracev3.ZipkinConfig{CollectorCluster: "zipkin", CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_PROTO}
	_, err := d.newTracer(&hcmv3.HttpConnectionManager_Tracing{
		Provider: &tracev3.Tracing_Http{Name: zipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(t, zc)}}}, false)
	if err == nil || !strings.Contains(err.Error(), "HTTP_JSON") {
		t.Fatalf("err %v", err)
	}
}
