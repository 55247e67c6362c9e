package dataplane

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkSidecarPairHTTP1 is the request path of `make bench-dataplane`
// in one process: an HTTP/1.1 client, a client sidecar (outbound HCM
// with stats, ISTIO_MUTUAL upstream), a server sidecar (mTLS inbound HCM
// with stats) and an echo application, with a 1 KiB body each way and
// the real router and clusters. allocs/op counts the whole chain,
// client and echo server included.
func BenchmarkSidecarPairHTTP1(b *testing.B) {
	ca := newTestCA(b)
	serverID := "spiffe://cluster.local/ns/default/sa/db"
	serverCert, _, _ := ca.issue(b, serverID)
	clientCert, _, _ := ca.issue(b, "spiffe://cluster.local/ns/default/sa/app")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	echo := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})}
	go echo.Serve(l)
	b.Cleanup(func() { echo.Close() })

	inPort, outPort := freePort(b), freePort(b)
	server := newDP(b, Options{Engine: DefaultEngine{}, Registry: prometheus.NewRegistry(), Secrets: &testSecrets{cert: serverCert, pool: ca.pool}, Node: testNode("db", "default")})
	in := newSnap()
	in.Clusters["inbound|9000||"] = staticCluster("inbound|9000||", l.Addr().String())
	in.Routes["inbound"] = routeTo("inbound", "inbound|9000||")
	in.Listeners["in"] = realListener("in", inPort, &listener.FilterChain{
		FilterChainMatch: &listener.FilterChainMatch{TransportProtocol: "tls"},
		TransportSocket:  tlsSocketOf(b, istioMutual()),
		Filters:          []*listener.Filter{hcmNetFilter(b, rds("inbound"), statsHTTPFilter(b, reporterInbound))},
	})
	if err := server.Apply(in); err != nil {
		b.Fatal(err)
	}
	client := newDP(b, Options{Engine: DefaultEngine{}, Registry: prometheus.NewRegistry(), Secrets: &testSecrets{cert: clientCert, pool: ca.pool}, Node: testNode("app", "default")})
	out := newSnap()
	c := staticCluster("outbound|9000||db.default.svc.cluster.local", fmt.Sprintf("127.0.0.1:%d", inPort))
	c.TransportSocket = tlsSocketOf(b, istioMutualUpstream(b, serverID))
	out.Clusters[c.Name] = c
	out.Routes["9000"] = routeTo("9000", c.Name)
	out.Listeners["out"] = realListener("out", outPort, &listener.FilterChain{
		Filters: []*listener.Filter{hcmNetFilter(b, rds("9000"), statsHTTPFilter(b, reporterOutbound))},
	})
	if err := client.Apply(out); err != nil {
		b.Fatal(err)
	}

	payload := bytes.Repeat([]byte("p"), 1024)
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := fmt.Sprintf("http://127.0.0.1:%d/echo", outPort)
	do := func() {
		resp, err := hc.Post(url, "application/octet-stream", bytes.NewReader(payload))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(payload)) {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	do() // connections and TLS sessions up
	b.ReportAllocs()
	b.ResetTimer()
	user, sys := cpuTimes()
	for range b.N {
		do()
	}
	user2, sys2 := cpuTimes()
	// CPU per request of the whole process (user and kernel time of the
	// client, both sidecars and the echo server): steadier than ns/op,
	// which is mostly waiting on loopback.
	b.ReportMetric(float64(user2-user)/float64(b.N), "user-ns/op")
	b.ReportMetric(float64(sys2-sys)/float64(b.N), "sys-ns/op")
}

func cpuTimes() (user, sys int64) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano(), ru.Stime.Nano()
}
