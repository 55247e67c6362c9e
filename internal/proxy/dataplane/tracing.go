package dataplane

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mizzen-mesh/mizzen/internal/proxy/httphead"
)

const (
	otelTracer   = "envoy.tracers.opentelemetry"
	zipkinTracer = "envoy.tracers.zipkin"
)

// tracer is one connection manager's tracing: W3C trace context and B3
// extraction and injection, spans exported over OTLP/gRPC or as Zipkin v2
// JSON to the cluster the provider names.
type tracer struct {
	tp   *sdktrace.TracerProvider
	conn *grpc.ClientConn
	tr   trace.Tracer
	prop propagation.TextMapPropagator
	kind trace.SpanKind
}

type spanState struct {
	span trace.Span
}

// dialCluster connects to a host of the named cluster of the current
// configuration (tracing collectors).
func (d *Dataplane) dialCluster(ctx context.Context, cluster string) (net.Conn, error) {
	st := d.cur.Load()
	if st == nil {
		return nil, fmt.Errorf("no configuration yet")
	}
	c, _, err := st.upstreams.DialTCP(ctx, cluster, netip.AddrPort{})
	return c, err
}

// newTracer builds the tracer of a connection manager; client is true for
// a sidecar's outbound side, whose spans are client spans.
func (d *Dataplane) newTracer(cfg *hcmv3.HttpConnectionManager_Tracing, client bool) (*tracer, error) {
	p := cfg.GetProvider()
	if p == nil {
		return nil, fmt.Errorf("no provider")
	}
	ratio := 1.0
	if rs := cfg.GetRandomSampling(); rs != nil {
		ratio = rs.GetValue() / 100
	}
	var (
		exp  sdktrace.SpanExporter
		conn *grpc.ClientConn
		svc  string
	)
	switch p.GetName() {
	case otelTracer:
		oc := &tracev3.OpenTelemetryConfig{}
		if err := anyTo(p.GetTypedConfig(), oc); err != nil {
			return nil, err
		}
		cluster := oc.GetGrpcService().GetEnvoyGrpc().GetClusterName()
		if cluster == "" {
			return nil, fmt.Errorf("grpc_service.envoy_grpc.cluster_name is required")
		}
		var err error
		conn, err = grpc.NewClient("passthrough:///"+cluster,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return d.dialCluster(ctx, cluster)
			}))
		if err != nil {
			return nil, fmt.Errorf("otlp client: %w", err)
		}
		exp, err = otlptracegrpc.New(context.Background(), otlptracegrpc.WithGRPCConn(conn))
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("otlp exporter: %w", err)
		}
		svc = oc.GetServiceName()
	case zipkinTracer:
		zc := &tracev3.ZipkinConfig{}
		if err := anyTo(p.GetTypedConfig(), zc); err != nil {
			return nil, err
		}
		cluster := zc.GetCollectorCluster()
		if cluster == "" {
			return nil, fmt.Errorf("collector_cluster is required")
		}
		if v := zc.GetCollectorEndpointVersion(); v != tracev3.ZipkinConfig_HTTP_JSON {
			return nil, fmt.Errorf("collector_endpoint_version %s is not supported; HTTP_JSON is", v)
		}
		path := zc.GetCollectorEndpoint()
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("collector_endpoint %q is not a path", path)
		}
		host := zc.GetCollectorHostname()
		if host == "" {
			host = cluster
		}
		exp = &zipkinExporter{
			url: "http://" + host + path, host: host, traceID128: zc.GetTraceId_128Bit(),
			client: &http.Client{Timeout: zipkinTimeout, Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return d.dialCluster(ctx, cluster)
				},
				MaxIdleConnsPerHost: 1,
			}},
		}
	default:
		return nil, fmt.Errorf("provider %q is not supported (%s and %s are)", p.GetName(), otelTracer, zipkinTracer)
	}
	if svc == "" {
		svc = d.opts.Node.CanonicalService() + "." + d.opts.Node.Namespace
	}
	res := resource.NewSchemaless(attribute.String("service.name", svc))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	kind := trace.SpanKindServer
	if client {
		kind = trace.SpanKindClient
	}
	return &tracer{
		tp:   tp,
		conn: conn,
		tr:   tp.Tracer("mizzen-proxy"),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, B3{}),
		kind: kind,
	}, nil
}

func (t *tracer) start(ctx context.Context, r *http.Request) (context.Context, *spanState) {
	ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	ctx, span := t.tr.Start(ctx, r.Host+r.URL.Path, trace.WithSpanKind(t.kind),
		trace.WithAttributes(
			attribute.String("http.method", r.Method),
			attribute.String("http.url", r.URL.String()),
			attribute.String("http.protocol", r.Proto),
			attribute.String("guid:x-request-id", httphead.Get(r.Header, "X-Request-Id")),
		))
	// The upstream continues this span's trace.
	t.prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
	return ctx, &spanState{span: span}
}

func (t *tracer) end(s *spanState, r *http.Request, code int, ri RequestInfo) {
	if ri.Operation != "" {
		s.span.SetName(ri.Operation)
	}
	s.span.SetAttributes(
		attribute.Int("http.status_code", code),
		attribute.String("upstream_cluster", ri.ClusterName),
		attribute.String("response_flags", dash(ri.ResponseFlags)),
	)
	if code >= 500 {
		s.span.SetStatus(codes.Error, http.StatusText(code))
	}
	s.span.End()
}

func (t *tracer) shutdown(ctx context.Context) {
	_ = t.tp.Shutdown(ctx)
	if t.conn != nil {
		_ = t.conn.Close()
	}
}

// B3 is the Zipkin B3 propagator: it extracts the single "b3" header or
// the X-B3-* headers and injects the X-B3-* headers.
type B3 struct{}

const (
	b3Single  = "b3"
	b3TraceID = "x-b3-traceid"
	b3SpanID  = "x-b3-spanid"
	b3Sampled = "x-b3-sampled"
	b3Flags   = "x-b3-flags"
	b3Parent  = "x-b3-parentspanid"
)

// Inject writes the X-B3-* headers of the span in ctx.
func (B3) Inject(ctx context.Context, c propagation.TextMapCarrier) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	c.Set(b3TraceID, sc.TraceID().String())
	c.Set(b3SpanID, sc.SpanID().String())
	if sc.IsSampled() {
		c.Set(b3Sampled, "1")
	} else {
		c.Set(b3Sampled, "0")
	}
}

// Extract reads B3 headers; the single header wins over the multi ones.
func (B3) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	if sc, ok := parseB3Single(c.Get(b3Single)); ok {
		return trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	tid, sid := c.Get(b3TraceID), c.Get(b3SpanID)
	if tid == "" || sid == "" {
		return ctx
	}
	sampled := c.Get(b3Sampled)
	if c.Get(b3Flags) == "1" {
		sampled = "1"
	}
	if sc, ok := b3Context(tid, sid, sampled); ok {
		return trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	return ctx
}

// Fields lists the headers B3 uses.
func (B3) Fields() []string {
	return []string{b3Single, b3TraceID, b3SpanID, b3Sampled, b3Flags, b3Parent}
}

func parseB3Single(v string) (trace.SpanContext, bool) {
	if v == "" {
		return trace.SpanContext{}, false
	}
	parts := strings.Split(v, "-")
	if len(parts) < 2 {
		return trace.SpanContext{}, false // sampling-only header: nothing to continue
	}
	sampled := ""
	if len(parts) >= 3 {
		sampled = parts[2]
	}
	return b3Context(parts[0], parts[1], sampled)
}

func b3Context(tid, sid, sampled string) (trace.SpanContext, bool) {
	if len(tid) == 16 {
		tid = strings.Repeat("0", 16) + tid
	}
	tb, err := hex.DecodeString(tid)
	if err != nil || len(tb) != 16 {
		return trace.SpanContext{}, false
	}
	sb, err := hex.DecodeString(sid)
	if err != nil || len(sb) != 8 {
		return trace.SpanContext{}, false
	}
	cfg := trace.SpanContextConfig{Remote: true}
	copy(cfg.TraceID[:], tb)
	copy(cfg.SpanID[:], sb)
	switch sampled {
	case "1", "true", "d":
		cfg.TraceFlags = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(cfg)
	return sc, sc.IsValid()
}
