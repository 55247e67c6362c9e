package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
	"github.com/mizzen-mesh/mizzen/internal/proxy/certs/certstest"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient/xdstest"
)

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func addr(ip string, port int) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

func static(name, hostport string) *cluster.Cluster {
	host, port, _ := net.SplitHostPort(hostport)
	var p int
	fmt.Sscan(port, &p)
	return &cluster.Cluster{Name: name, ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
			LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: addr(host, p)}}}},
		}}}}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSidecarOnLoopback runs the proxy as "proxy sidecar" would, with the
// real data plane, in INTERCEPTION_MODE=NONE on loopback: certificate from
// the CA, configuration over ADS (a TCP listener, and an HTTP listener
// whose routes come by RDS), traffic through both, then SIGTERM.
func TestSidecarOnLoopback(t *testing.T) {
	ca := certstest.Start(t, 0)
	cp := xdstest.Start(t, ca)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s", r.URL.Path)
	}))
	defer app.Close()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	tcpPort, httpPort := freePort(t), freePort(t)
	router := &hcm.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}
	res := map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType: {static("inbound|9080||", strings.TrimPrefix(app.URL, "http://")), static("inbound|7000||", echo.Addr().String())},
		resourcev3.ListenerType: {
			&listener.Listener{Name: fmt.Sprintf("127.0.0.1_%d", tcpPort), Address: addr("127.0.0.1", tcpPort),
				FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{Name: "envoy.filters.network.tcp_proxy",
					ConfigType: &listener.Filter_TypedConfig{TypedConfig: anyOf(t, &tcpproxy.TcpProxy{StatPrefix: "tcp",
						ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: "inbound|7000||"}})}}}}}},
			&listener.Listener{Name: fmt.Sprintf("127.0.0.1_%d", httpPort), Address: addr("127.0.0.1", httpPort),
				FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{Name: "envoy.filters.network.http_connection_manager",
					ConfigType: &listener.Filter_TypedConfig{TypedConfig: anyOf(t, &hcm.HttpConnectionManager{StatPrefix: "http",
						RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: "9080",
							ConfigSource: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}},
						HttpFilters: []*hcm.HttpFilter{router}})}}}}}},
		},
		resourcev3.RouteType: {&route.RouteConfiguration{Name: "9080", VirtualHosts: []*route.VirtualHost{{
			Name: "app", Domains: []string{"*"},
			Routes: []*route.Route{{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "inbound|9080||"}}}}},
		}}}},
	}
	cp.Set(t, "sidecar~127.0.0.1~app-1.shop~shop.svc.cluster.local", "v1", res)

	env := []string{"POD_NAME=app-1", "POD_NAMESPACE=shop", "INSTANCE_IP=127.0.0.1", "SERVICE_ACCOUNT=app",
		"DISCOVERY_ADDRESS=" + cp.Addr, "CA_ADDRESS=" + ca.Addr, `PROXY_CONFIG={"terminationDrainDuration":"1s"}`,
		"ISTIO_META_INTERCEPTION_MODE=NONE"}
	o, err := parseAgentFlags(config.ModeSidecar, []string{"--log-level=error", "--root-cert=" + ca.RootFile,
		"--token-file=" + ca.TokenFile(t, "shop", "app"), "--labels-file=/nonexistent",
		"--admin-address=127.0.0.1:0", "--status-address=127.0.0.1:0", "--health-address=127.0.0.1:0", "--stats-address=127.0.0.1:0"},
		env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(chan agent.Addresses, 1)
	o.Listening = func(a agent.Addresses) { addrs <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, o) }()
	var a agent.Addresses
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("proxy ended: %v", err)
	}
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy ended with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the proxy did not stop")
		}
	}()
	if err := agent.Wait(ctx, "http://"+a.Health+"/healthz/ready", 30*time.Second, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}

	// HTTP through the RDS-routed listener.
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/reviews/1", httpPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTP through the proxy: %v %q", err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body != "app saw /reviews/1" {
		t.Fatalf("HTTP through the proxy answered %q", body)
	}
	// TCP through the tcp_proxy listener.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("TCP echo through the proxy: %q %v", b, err)
	}
	c.Close()
	// The admin port dumps the data plane's configuration.
	resp, err := http.Get("http://" + a.Admin + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	dump, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(dump), fmt.Sprintf("127.0.0.1_%d", httpPort)) {
		t.Fatalf("config_dump %d:\n%.400s", resp.StatusCode, dump)
	}
}
