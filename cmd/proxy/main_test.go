package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

func TestInitDryRun(t *testing.T) {
	var out bytes.Buffer
	// Exactly the injector's arguments.
	err := run(context.Background(), []string{"init", "--proxy-uid=1337", "--proxy-gid=1337",
		"--outbound-capture-port=15001", "--inbound-capture-port=15006", "--include-inbound-ports=*",
		"--exclude-inbound-ports=15090,15021,15020", "--exclude-outbound-ports=", "--include-outbound-ip-ranges=*",
		"--exclude-outbound-ip-ranges=", "--dry-run"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"table ip mizzen_capture", "table ip6 mizzen_capture", "redirect to :15001", "redirect to :15006", "meta skuid 1337 return"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(context.Background(), []string{"init", "--include-inbound-ports=http", "--dry-run"}, io.Discard, io.Discard); err == nil {
		t.Error("a bad port list was accepted")
	}
}

func TestWait(t *testing.T) {
	ready := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := run(context.Background(), []string{"wait", "--timeout=300ms", "--interval=50ms", "--url=" + srv.URL}, io.Discard, io.Discard); err == nil {
		t.Fatal("wait succeeded against a proxy that is not ready")
	}
	ready = true
	if err := run(context.Background(), []string{"wait", "--timeout=5s", "--interval=50ms", "--url=" + srv.URL}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
}

func TestAgentFlags(t *testing.T) {
	o, err := parseAgentFlags(config.ModeRouter, []string{"--gateway-name=ingress", "--log-level=default:debug,xds:warn",
		"--discovery-address=127.0.0.1:15012", "--metadata", "INTERCEPTION_MODE=NONE", "--metadata=APP_ADDRESS=127.0.0.1",
		"--labels", "istio=ingressgateway", "--admin-address=127.0.0.1:0"}, []string{"POD_NAME=a"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Mode != config.ModeRouter || o.GatewayName != "ingress" || o.DiscoveryAddress != "127.0.0.1:15012" ||
		o.Metadata["INTERCEPTION_MODE"] != "NONE" || o.Metadata["APP_ADDRESS"] != "127.0.0.1" ||
		o.Labels["istio"] != "ingressgateway" || o.AdminAddress != "127.0.0.1:0" || o.NewDataplane == nil {
		t.Fatalf("options %+v", o)
	}
	if !o.Log.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("default:debug did not enable debug logs")
	}
	for _, bad := range [][]string{{"--log-level=loud"}, {"--metadata=NOEQUALS"}, {"stray"}} {
		if _, err := parseAgentFlags(config.ModeSidecar, bad, nil, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseAgentFlags(config.ModeRouter, nil, nil, io.Discard); err == nil {
		t.Error("router without --gateway-name accepted")
	}
	if err := run(context.Background(), []string{"fly"}, io.Discard, io.Discard); err == nil {
		t.Error("unknown command accepted")
	}
}
