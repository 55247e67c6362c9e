package dataplane

import (
	"fmt"
	"net/http"

	"encoding/json"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

func TestConfigDumpHidesSecrets(t *testing.T) {
	d := newDP(t, Options{})
	if d.Ready() {
		t.Fatal("ready before any snapshot")
	}
	snap := newSnap()
	snap.Clusters["a"] = staticCluster("a", backend(t, "a"))
	snap.Routes["80"] = routeTo("80", "a")
	snap.Listeners["l"] = realListener("l", freePort(t), &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"))}})
	snap.Secrets["kubernetes://cred"] = &tlsv3.Secret{Name: "kubernetes://cred"}
	snap.Versions["lds"] = "v7"
	if err := d.Apply(snap); err != nil {
		t.Fatal(err)
	}
	b, err := d.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	var dump map[string]any
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"listeners", "routes", "clusters"} {
		if l, _ := dump[k].([]any); len(l) != 1 {
			t.Errorf("%s: %v", k, dump[k])
		}
	}
	if s, _ := dump["secrets"].([]any); len(s) != 1 || s[0] != "kubernetes://cred" {
		t.Errorf("secrets: %v", dump["secrets"])
	}
	if !strings.Contains(string(b), `"v7"`) {
		t.Error("versions missing")
	}
}

func TestUnknownHTTPFilters(t *testing.T) {
	d := newDP(t, Options{})
	snap := newSnap()
	snap.Clusters["a"] = staticCluster("a", backend(t, "a"))
	snap.Routes["80"] = routeTo("80", "a")
	port := freePort(t)
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"),
		&hcmv3.HttpFilter{Name: "envoy.filters.http.lua"})}})
	if err := d.Apply(snap); err == nil || !strings.Contains(err.Error(), "envoy.filters.http.lua") {
		t.Fatalf("unknown filter: %v", err)
	}
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, rds("80"),
		&hcmv3.HttpFilter{Name: "envoy.filters.http.lua", IsOptional: true})}})
	if err := d.Apply(snap); err != nil {
		t.Fatalf("optional unknown filter: %v", err)
	}
}

func TestForwardedFor(t *testing.T) {
	forEngines(t, func(t *testing.T, engine Engine) {
		app := backend(t, "app")
		port := freePort(t)
		hc := rds("80")
		hc.UseRemoteAddress = wrapperspb.Bool(true)
		snap := newSnap()
		snap.Clusters["a"] = staticCluster("a", app)
		snap.Routes["80"] = routeTo("80", "a")
		snap.Listeners["gw"] = realListener("gw", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, hc)}})
		d := newDP(t, Options{Engine: engine})
		if err := d.Apply(snap); err != nil {
			t.Fatal(err)
		}
		resp, _ := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "X-Forwarded-For", "203.0.113.9")
		if got := resp.Header.Get("Echo-X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("x-forwarded-for = %q", got)
		}
		if got := resp.Header.Get("Echo-X-Forwarded-Proto"); got != "http" {
			t.Errorf("x-forwarded-proto = %q", got)
		}
	})
}
