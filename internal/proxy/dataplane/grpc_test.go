package dataplane

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/prometheus/client_golang/prometheus"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/upstream"
)

// TestGRPCThroughConnectionManager makes a gRPC call (h2c downstream and
// upstream) through the data plane with the real router and checks the
// gRPC labels of istio_requests_total.
func TestGRPCThroughConnectionManager(t *testing.T) {
	col := &collector{}
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, col)
	go gs.Serve(gl)
	defer gs.Stop()

	reg := prometheus.NewRegistry()
	port := freePort(t)
	snap := newSnap()
	c := staticCluster("inbound|4317||", gl.Addr().String())
	h2opts, _ := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}})
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{upstream.HTTPProtocolOptionsName: h2opts}
	snap.Clusters[c.Name] = c
	snap.Routes["r"] = routeTo("r", c.Name)
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("r"), statsHTTPFilter(t, reporterInbound))}})
	d := newDP(t, Options{Engine: DefaultEngine{}, Registry: reg})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := collectortrace.NewTraceServiceClient(conn).Export(ctx, &collectortrace.ExportTraceServiceRequest{}); err != nil {
		t.Fatalf("grpc call through the data plane: %v", err)
	}
	mfs, _ := reg.Gather()
	var labels map[string]string
	for _, mf := range mfs {
		if mf.GetName() == "istio_requests_total" {
			for _, m := range mf.GetMetric() {
				labels = map[string]string{}
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
			}
		}
	}
	if labels["request_protocol"] != "grpc" || labels["grpc_response_status"] != "0" || labels["response_code"] != "200" {
		t.Fatalf("grpc labels: %v", labels)
	}
}
