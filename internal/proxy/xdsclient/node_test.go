package xdsclient

import (
	"maps"
	"strings"
	"testing"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

func TestNewNode(t *testing.T) {
	base := []string{"POD_NAME=cart-1", "POD_NAMESPACE=shop", "INSTANCE_IP=10.1.0.5", "SERVICE_ACCOUNT=cart"}
	cases := []struct {
		name     string
		in       NodeInput
		wantID   string
		wantMeta map[string]string // a subset
		wantErr  string
	}{
		{"sidecar from the injector's env", NodeInput{Env: append(base,
			"ISTIO_META_WORKLOAD_NAME=cart", "ISTIO_META_CLUSTER_ID=Kubernetes", "ISTIO_META_MESH_ID=cluster.local",
			"ISTIO_META_INTERCEPTION_MODE=REDIRECT", "REVISION=canary", "ISTIO_META_APP_CONTAINERS=app", "OTHER=x"),
			Labels: map[string]string{"app": "cart", "version": "v2"}},
			"sidecar~10.1.0.5~cart-1.shop~shop.svc.cluster.local",
			map[string]string{"NAME": "cart-1", "NAMESPACE": "shop", "SERVICE_ACCOUNT": "cart", "INSTANCE_IPS": "10.1.0.5",
				"WORKLOAD_NAME": "cart", "CLUSTER_ID": "Kubernetes", "MESH_ID": "cluster.local", "REVISION": "canary",
				"INTERCEPTION_MODE": "REDIRECT", "APP_CONTAINERS": "app", "LABELS": `{"app":"cart","version":"v2"}`}, ""},
		{"router with gateway name and flag metadata", NodeInput{Mode: config.ModeRouter, Env: append(base, "INSTANCE_IP=10.1.0.6,fd00::6"),
			Metadata: map[string]string{"INTERCEPTION_MODE": "NONE", "INBOUND_BIND_ADDRESS": "127.0.0.1"},
			Labels:   map[string]string{"istio": "ingressgateway"}, GatewayName: "ingress"},
			"router~10.1.0.6~cart-1.shop~shop.svc.cluster.local",
			map[string]string{"INSTANCE_IPS": "10.1.0.6,fd00::6", "INTERCEPTION_MODE": "NONE", "INBOUND_BIND_ADDRESS": "127.0.0.1",
				"GATEWAY_NAME": "ingress", "LABELS": `{"istio":"ingressgateway"}`, "WORKLOAD_NAME": "cart-1"}, ""},
		{"labels from ISTIO_META_LABELS, the file wins", NodeInput{Env: append(base, `ISTIO_META_LABELS={"app":"old","tier":"web"}`),
			Labels: map[string]string{"app": "cart"}}, "", map[string]string{"LABELS": `{"app":"cart","tier":"web"}`}, ""},
		{"no namespace", NodeInput{Env: []string{"POD_NAME=a", "INSTANCE_IP=1.2.3.4"}}, "", nil, "POD_NAMESPACE"},
		{"no IP", NodeInput{Env: []string{"POD_NAME=a", "POD_NAMESPACE=b"}}, "", nil, "INSTANCE_IP"},
		{"bad labels JSON", NodeInput{Env: append(base, "ISTIO_META_LABELS=app=x")}, "", nil, "ISTIO_META_LABELS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := NewNode(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantID != "" && n.ID != tc.wantID {
				t.Errorf("id %s, want %s", n.ID, tc.wantID)
			}
			for k, v := range tc.wantMeta {
				if n.Metadata[k] != v {
					t.Errorf("metadata %s = %q, want %q", k, n.Metadata[k], v)
				}
			}
			if _, leaked := n.Metadata["OTHER"]; leaked {
				t.Error("a variable without ISTIO_META_ became metadata")
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels("app=\"cart\"\nsecurity.istio.io/tlsMode=\"istio\"\n\nquote=\"a\\\"b\"\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app": "cart", "security.istio.io/tlsMode": "istio", "quote": `a"b`}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"app", "app=cart"} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	kv, err := ParseKeyValues([]string{"a=1", "b=x=y"})
	if err != nil || !maps.Equal(kv, map[string]string{"a": "1", "b": "x=y"}) {
		t.Fatalf("key values %v %v", kv, err)
	}
	if _, err := ParseKeyValues([]string{"novalue"}); err == nil {
		t.Error("a flag without = parsed")
	}
}
