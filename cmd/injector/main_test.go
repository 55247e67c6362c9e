package main

import "testing"

// The chart's arguments (charts/README.md) must parse into Run's options.
func TestParseFlagsChartArguments(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "istio-system")
	o, _, err := parseFlags([]string{
		"--port=9443", "--monitoring-port=15014", "--inject-config=/etc/istio/inject",
		"--webhook-config=istio-sidecar-injector-canary-istio-system",
		"--service=istio-sidecar-injector-canary", "--revision=canary",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Port != 9443 || o.MonitoringPort != 15014 || o.InjectConfigDir != "/etc/istio/inject" ||
		o.WebhookConfig != "istio-sidecar-injector-canary-istio-system" || o.Service != "istio-sidecar-injector-canary" ||
		o.Revision != "canary" || o.Namespace != "istio-system" {
		t.Fatalf("options: %+v", o)
	}
}

func TestParseFlagsRejectsUnknownAndMissingNamespace(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "istio-system")
	if _, _, err := parseFlags([]string{"--no-such-flag"}); err == nil {
		t.Error("an unknown flag was accepted")
	}
	t.Setenv("POD_NAMESPACE", "")
	if _, _, err := parseFlags(nil); err == nil {
		t.Error("no namespace was accepted")
	}
	o, _, err := parseFlags([]string{"--namespace=mesh", "--tls-cert-dir=/certs", "--tls-extra-sans=a,127.0.0.1"})
	if err != nil || o.Namespace != "mesh" || o.CertDir != "/certs" || len(o.ExtraSANs) != 2 {
		t.Fatalf("options %+v, err %v", o, err)
	}
}
