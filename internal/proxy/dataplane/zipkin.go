package dataplane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// zipkinExporter sends finished spans to a Zipkin collector as Zipkin v2
// JSON (POST <endpoint>), what Jaeger, Zipkin and OpenTelemetry
// collectors accept on port 9411. The SDK's batcher calls it with batches.
type zipkinExporter struct {
	url        string
	host       string // the Host header: the collector service's name
	client     *http.Client
	traceID128 bool
}

// zipkinSpan is one span in Zipkin's v2 model.
type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind,omitempty"`
	Timestamp     int64             `json:"timestamp"` // µs since the epoch
	Duration      int64             `json:"duration"`  // µs
	LocalEndpoint *zipkinEndpoint   `json:"localEndpoint,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
}

type zipkinEndpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
}

func (e *zipkinExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	out := make([]zipkinSpan, 0, len(spans))
	for _, s := range spans {
		out = append(out, e.convert(s))
	}
	body, err := json.Marshal(out)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Host = e.host
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("zipkin collector: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("zipkin collector answered %s", resp.Status)
	}
	return nil
}

func (e *zipkinExporter) Shutdown(context.Context) error {
	e.client.CloseIdleConnections()
	return nil
}

func (e *zipkinExporter) convert(s sdktrace.ReadOnlySpan) zipkinSpan {
	sc := s.SpanContext()
	traceID := sc.TraceID().String()
	if !e.traceID128 {
		traceID = traceID[16:]
	}
	z := zipkinSpan{
		TraceID:   traceID,
		ID:        sc.SpanID().String(),
		Name:      s.Name(),
		Timestamp: s.StartTime().UnixMicro(),
		Duration:  max(s.EndTime().Sub(s.StartTime()).Microseconds(), 1),
	}
	if p := s.Parent(); p.SpanID().IsValid() {
		z.ParentID = p.SpanID().String()
	}
	switch s.SpanKind() {
	case trace.SpanKindServer:
		z.Kind = "SERVER"
	case trace.SpanKindClient:
		z.Kind = "CLIENT"
	}
	if res := s.Resource(); res != nil {
		if v, ok := res.Set().Value("service.name"); ok {
			z.LocalEndpoint = &zipkinEndpoint{ServiceName: v.AsString()}
		}
	}
	attrs := s.Attributes()
	if len(attrs) > 0 || s.Status().Code == codes.Error {
		z.Tags = make(map[string]string, len(attrs)+1)
	}
	for _, a := range attrs {
		z.Tags[string(a.Key)] = attrString(a.Value)
	}
	if s.Status().Code == codes.Error {
		z.Tags["error"] = s.Status().Description
		if z.Tags["error"] == "" {
			z.Tags["error"] = "true"
		}
	}
	return z
}

func attrString(v attribute.Value) string {
	switch v.Type() {
	case attribute.STRING:
		return v.AsString()
	case attribute.INT64:
		return strconv.FormatInt(v.AsInt64(), 10)
	case attribute.BOOL:
		return strconv.FormatBool(v.AsBool())
	case attribute.FLOAT64:
		return strconv.FormatFloat(v.AsFloat64(), 'g', -1, 64)
	}
	return v.Emit()
}

// zipkinTimeout bounds one export.
const zipkinTimeout = 10 * time.Second
