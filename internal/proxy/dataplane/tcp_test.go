package dataplane

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filelog "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func echoServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

// TestOriginalDstHandOffAndTCPMetrics sends captured connections to the
// virtual outbound listener: one is handed to the TCP listener matching its
// original destination, one falls through to the passthrough chain.
func TestOriginalDstHandOffAndTCPMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	echo := echoServer(t)
	other := echoServer(t)
	port := freePort(t)
	var origFor sync.Map // client local address → original destination
	opts := Options{Registry: reg, OriginalDst: func(c net.Conn) (netip.AddrPort, error) {
		od, ok := origFor.Load(c.RemoteAddr().String())
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("not captured")
		}
		return od.(netip.AddrPort), nil
	}}
	d := newDP(t, opts)
	snap := newSnap()
	snap.Clusters["outbound|6379||redis.default.svc.cluster.local"] = staticCluster("outbound|6379||redis.default.svc.cluster.local", echo)
	snap.Clusters["PassthroughCluster"] = &cluster.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST}}
	snap.Listeners["virtualOutbound"] = &listener.Listener{Name: "virtualOutbound", Address: sockAddr("0.0.0.0", port), UseOriginalDst: wrapperspb.Bool(true),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{tcpNetFilter(t, "PassthroughCluster")}}}}
	snap.Listeners["10.96.0.10_6379"] = &listener.Listener{Name: "10.96.0.10_6379", Address: sockAddr("10.96.0.10", 6379), BindToPort: wrapperspb.Bool(false),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{statsNetFilter(t, reporterOutbound), tcpNetFilter(t, "outbound|6379||redis.default.svc.cluster.local")}}}}
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	// Register before the data plane reads it: dial, then write.
	roundTrip := func(c net.Conn, msg string) string {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	_ = other
	c1 := dialLater(t, port, &origFor, netip.MustParseAddrPort("10.96.0.10:6379"))
	if got := roundTrip(c1, "PING\r\n"); got != "PING\r\n" {
		t.Fatalf("service listener: %q", got)
	}
	c1.Close()
	c2 := dialLater(t, port, &origFor, netip.MustParseAddrPort(other))
	if got := roundTrip(c2, "hello"); got != "hello" {
		t.Fatalf("passthrough: %q", got)
	}
	c2.Close()
	// Wait for the closed counter of the service connection.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs, _ := reg.Gather()
		vals := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				ok := false
				for _, l := range m.GetLabel() {
					if l.GetName() == "destination_service" && l.GetValue() == "unknown" {
						ok = true
					}
					if l.GetName() == "request_protocol" && l.GetValue() != "tcp" {
						t.Fatalf("tcp metric with request_protocol %s", l.GetValue())
					}
				}
				if ok {
					vals[mf.GetName()] += m.GetCounter().GetValue()
				}
			}
		}
		if vals["istio_tcp_connections_closed_total"] == 1 {
			if vals["istio_tcp_connections_opened_total"] != 1 || vals["istio_tcp_sent_bytes_total"] != 6 || vals["istio_tcp_received_bytes_total"] != 6 {
				t.Fatalf("tcp metrics %v", vals)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcp metrics never recorded the closed connection: %v", vals)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialLater connects and records the original destination under the
// client's address before sending anything; the data plane asks for the
// original destination only after accepting.
func dialLater(t *testing.T, port uint32, origFor *sync.Map, od netip.AddrPort) net.Conn {
	d := net.Dialer{Control: nil}
	// Reserve a local port first so the mapping exists before connect.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := l.Addr().(*net.TCPAddr)
	l.Close()
	origFor.Store(local.String(), od)
	d.LocalAddr = local
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	app := backend(t, "app")
	port := freePort(t)
	format := `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"
	fl := &filelog.FileAccessLog{Path: path, AccessLogFormat: &filelog.FileAccessLog_LogFormat{LogFormat: &core.SubstitutionFormatString{
		Format: &core.SubstitutionFormatString_TextFormatSource{TextFormatSource: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: format}}}}}}
	hc := rds("r")
	hc.AccessLog = []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, fl)}}}
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Routes["r"] = routeTo("r", "app")
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, hc)}})
	d := newDP(t, Options{})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/logged?q=1", port), "User-Agent", "test-agent", "X-Request-Id", "rid-1")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	for _, want := range []string{`"GET /logged?q=1 HTTP/1.1" 200 - via_upstream - "-" 0 11 `, `"test-agent" "rid-1"`, `"` + app + `" app - 127.0.0.1:`, " default\n"} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	bad := rds("r")
	badFl := &filelog.FileAccessLog{Path: path, AccessLogFormat: &filelog.FileAccessLog_LogFormat{LogFormat: &core.SubstitutionFormatString{
		Format: &core.SubstitutionFormatString_TextFormatSource{TextFormatSource: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "%NO_SUCH_OPERATOR%"}}}}}}
	bad.AccessLog = []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, badFl)}}}
	s2 := snap.Clone()
	s2.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, bad)}})
	if err := d.Apply(s2); err == nil || !strings.Contains(err.Error(), "NO_SUCH_OPERATOR") {
		t.Fatalf("unknown operator: %v", err)
	}
}

// TestVirtualInboundMatchesOriginalPort: captured inbound connections
// arrive on one socket and pick the chain of the workload port they were
// sent to.
func TestVirtualInboundMatchesOriginalPort(t *testing.T) {
	echo := echoServer(t)
	port := freePort(t)
	var origFor sync.Map
	d := newDP(t, Options{OriginalDst: func(c net.Conn) (netip.AddrPort, error) {
		od, ok := origFor.Load(c.RemoteAddr().String())
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("not captured")
		}
		return od.(netip.AddrPort), nil
	}})
	snap := newSnap()
	snap.Clusters["inbound|9000||"] = staticCluster("inbound|9000||", echo)
	vi := realListener("virtualInbound", port,
		&listener.FilterChain{FilterChainMatch: &listener.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9000)}, Filters: []*listener.Filter{tcpNetFilter(t, "inbound|9000||")}},
	)
	vi.TrafficDirection = core.TrafficDirection_INBOUND
	snap.Listeners["virtualInbound"] = vi
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	c := dialLater(t, port, &origFor, netip.MustParseAddrPort("10.1.2.3:9000"))
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "in")
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "in" {
		t.Fatalf("port 9000 chain: %q %v", b, err)
	}
	// Sent to a port without a chain: closed.
	c2 := dialLater(t, port, &origFor, netip.MustParseAddrPort("10.1.2.3:9999"))
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "x")
	if _, err := c2.Read(b); err == nil {
		t.Fatal("connection to an unknown port was served")
	}
}

func TestTCPIdleTimeoutAndWeights(t *testing.T) {
	echo := echoServer(t)
	port := freePort(t)
	snap := newSnap()
	snap.Clusters["a"] = staticCluster("a", echo)
	snap.Clusters["b"] = staticCluster("b", "127.0.0.1:1") // never picked: weight 0
	tp := &tcpv3.TcpProxy{StatPrefix: "t", IdleTimeout: durationpb.New(100 * time.Millisecond),
		ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "a", Weight: 1}, {Name: "b", Weight: 0}}}}}
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{{Name: tcpProxyFilter, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, tp)}}}})
	d := newDP(t, Options{})
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "x")
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("weighted cluster: %v", err)
		}
		if i == 0 {
			// Idle: the proxy closes the connection.
			if _, err := c.Read(b); err == nil || strings.Contains(err.Error(), "timeout") {
				t.Fatalf("idle connection not closed by the proxy: %v", err)
			}
		}
		c.Close()
	}
}
