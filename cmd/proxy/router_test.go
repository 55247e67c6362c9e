package main

import (
	"context"
	"io"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
	"github.com/mizzen-mesh/mizzen/internal/proxy/certs/certstest"
	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
	"github.com/mizzen-mesh/mizzen/internal/proxy/xdsclient/xdstest"
)

// TestRouterIdentifiesAsGateway checks what "proxy router" tells the
// control plane: a router node id and the gateway's name and labels.
func TestRouterIdentifiesAsGateway(t *testing.T) {
	ca := certstest.Start(t, 0)
	cp := xdstest.Start(t, ca)
	env := []string{"POD_NAME=ingress-7d9", "POD_NAMESPACE=istio-system", "INSTANCE_IP=127.0.0.1",
		"SERVICE_ACCOUNT=istio-ingressgateway", "DISCOVERY_ADDRESS=" + cp.Addr, "CA_ADDRESS=" + ca.Addr, "GATEWAY_KIND=ingress"}
	o, err := parseAgentFlags(config.ModeRouter, []string{"--gateway-name=istio-ingressgateway", "--log-level=error",
		"--root-cert=" + ca.RootFile, "--token-file=" + ca.TokenFile(t, "istio-system", "istio-ingressgateway"),
		"--labels-file=/nonexistent", "--labels=app=istio-ingressgateway",
		"--admin-address=127.0.0.1:0", "--status-address=-", "--health-address=-", "--stats-address=-"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, o) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for len(cp.Requests(resourcev3.ClusterType)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the router never subscribed")
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("router ended early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	n := cp.Requests(resourcev3.ClusterType)[0].GetNode()
	if n.GetId() != "router~127.0.0.1~ingress-7d9.istio-system~istio-system.svc.cluster.local" {
		t.Errorf("node id %s", n.GetId())
	}
	md := n.GetMetadata().GetFields()
	if md["GATEWAY_NAME"].GetStringValue() != "istio-ingressgateway" {
		t.Errorf("GATEWAY_NAME %v", md["GATEWAY_NAME"])
	}
	if got := md["LABELS"].GetStringValue(); got != `{"app":"istio-ingressgateway","istio":"ingressgateway"}` {
		t.Errorf("LABELS %s", got)
	}
	if peers := cp.Peers(); len(peers) == 0 || peers[0] != "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway" {
		t.Errorf("identity %v", peers)
	}
}
