package injector

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mizzen-mesh/mizzen/internal/inject"
)

// The default revision runs on a cluster with native sidecars and
// nativeSidecar: auto, so the proxy is an init container with
// restartPolicy Always placed after istio-init.
func TestInjectedPodNativeSidecar(t *testing.T) {
	pod := mustCreate(t, appPod(namespace(t, injectionEnabled)))
	assertInjected(t, pod, "default")

	if got := names(pod.Spec.InitContainers); !slices.Equal(got, []string{"istio-init", "istio-proxy"}) {
		t.Fatalf("init containers %v", got)
	}
	if got := names(pod.Spec.Containers); !slices.Equal(got, []string{"productpage"}) {
		t.Fatalf("containers %v", got)
	}
	proxy, native := proxyOf(pod)
	if !native || proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatal("the proxy is not a native sidecar")
	}
	if proxy.StartupProbe == nil || proxy.StartupProbe.HTTPGet.Path != "/healthz/ready" || proxy.StartupProbe.HTTPGet.Port.IntValue() != 15021 {
		t.Errorf("native sidecar startup probe %+v", proxy.StartupProbe)
	}
	if strings.Join(proxy.Command, " ")+" "+proxy.Args[0] != "/usr/local/bin/proxy sidecar" {
		t.Errorf("proxy runs %v %v", proxy.Command, proxy.Args)
	}
	if proxy.Image != "ghcr.io/mizzen-mesh/mizzen:0.1.0" {
		t.Errorf("proxy image %s", proxy.Image)
	}
	sc := proxy.SecurityContext
	if *sc.RunAsUser != 1337 || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !*sc.RunAsNonRoot {
		t.Errorf("proxy securityContext %+v", sc)
	}
	if p := proxy.ReadinessProbe; p == nil || p.HTTPGet.Path != "/healthz/ready" || p.HTTPGet.Port.IntValue() != 15021 {
		t.Errorf("proxy readiness probe %+v", p)
	}
	if len(proxy.Ports) == 0 || proxy.Ports[0].Name != "http-envoy-prom" || proxy.Ports[0].ContainerPort != 15090 {
		t.Errorf("proxy ports %+v", proxy.Ports)
	}
	for _, e := range []string{"POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT"} {
		if _, ok := envFrom(proxy, e); !ok {
			t.Errorf("proxy env %s missing", e)
		}
	}
	if v, _ := envValue(proxy, "DISCOVERY_ADDRESS"); v != "istiod.istio-system.svc:15012" {
		t.Errorf("DISCOVERY_ADDRESS=%q", v)
	}
	if v, _ := envValue(proxy, "TRUST_DOMAIN"); v != "cluster.local" {
		t.Errorf("TRUST_DOMAIN=%q", v)
	}

	initC := container(pod.Spec.InitContainers, "istio-init")
	isc := initC.SecurityContext
	if strings.Join(initC.Command, " ")+" "+initC.Args[0] != "/usr/local/bin/proxy init" ||
		*isc.RunAsUser != 0 || *isc.RunAsNonRoot || *isc.AllowPrivilegeEscalation || *isc.Privileged ||
		!slices.Equal(isc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
		!slices.Equal(isc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("istio-init %v %v, securityContext %+v", initC.Command, initC.Args, isc)
	}

	// Labels and annotations Istio sets.
	for k, v := range map[string]string{
		"security.istio.io/tlsMode":           "istio",
		"service.istio.io/canonical-name":     "productpage",
		"service.istio.io/canonical-revision": "v1",
	} {
		if pod.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, pod.Labels[k], v)
		}
	}
	var st inject.Status
	if err := json.Unmarshal([]byte(pod.Annotations[inject.AnnotationStatus]), &st); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.InitContainers, []string{"istio-init", "istio-proxy"}) || !slices.Contains(st.Volumes, "istio-token") {
		t.Errorf("status %+v", st)
	}

	// Volumes: istio-ca token, root cert, podinfo.
	vol := func(name string) *corev1.Volume {
		for i := range pod.Spec.Volumes {
			if pod.Spec.Volumes[i].Name == name {
				return &pod.Spec.Volumes[i]
			}
		}
		t.Fatalf("volume %s missing", name)
		return nil
	}
	if tok := vol("istio-token").Projected.Sources[0].ServiceAccountToken; tok.Audience != "istio-ca" || tok.Path != "istio-token" {
		t.Errorf("token volume %+v", tok)
	}
	if cm := vol("istiod-ca-cert").ConfigMap; cm.Name != "istio-ca-root-cert" || !*cm.Optional {
		t.Errorf("root cert volume %+v", cm)
	}
	if d := vol("istio-podinfo").DownwardAPI; len(d.Items) != 2 || d.Items[0].FieldRef.FieldPath != "metadata.labels" {
		t.Errorf("podinfo volume %+v", d)
	}

	// HTTP probes go through the proxy; the originals are in its env.
	app := container(pod.Spec.Containers, "productpage")
	if g := app.LivenessProbe.HTTPGet; g.Path != "/app-health/productpage/livez" || g.Port.IntValue() != 15020 {
		t.Errorf("liveness probe %+v", g)
	}
	if g := app.ReadinessProbe.HTTPGet; g.Path != "/app-health/productpage/readyz" || g.Port.IntValue() != 15020 {
		t.Errorf("readiness probe %+v", g)
	}
	probers, _ := envValue(proxy, "ISTIO_KUBE_APP_PROBERS")
	if !strings.Contains(probers, `"/app-health/productpage/livez":{"httpGet":{"path":"/health","port":9080`) {
		t.Errorf("ISTIO_KUBE_APP_PROBERS=%s", probers)
	}
}

func envFrom(c *corev1.Container, name string) (*corev1.EnvVarSource, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.ValueFrom, e.ValueFrom != nil
		}
	}
	return nil, false
}

// Revision canary has sidecar.nativeSidecar: false in its values: the proxy
// is a regular container, first.
func TestInjectedPodRegularSidecar(t *testing.T) {
	pod := mustCreate(t, appPod(namespace(t, map[string]string{"istio.io/rev": "canary"})))
	assertInjected(t, pod, "canary")
	if got := names(pod.Spec.Containers); !slices.Equal(got, []string{"istio-proxy", "productpage"}) {
		t.Fatalf("containers %v, want the proxy first", got)
	}
	if got := names(pod.Spec.InitContainers); !slices.Equal(got, []string{"istio-init"}) {
		t.Fatalf("init containers %v", got)
	}
	proxy, _ := proxyOf(pod)
	if proxy.Lifecycle != nil {
		t.Error("no hold asked, yet the proxy has a postStart hook")
	}
	if v, _ := envValue(proxy, "DISCOVERY_ADDRESS"); v != "istiod-canary.istio-system.svc:15012" {
		t.Errorf("DISCOVERY_ADDRESS=%q", v)
	}
}

func TestAnnotationsHonoured(t *testing.T) {
	ns := namespace(t, map[string]string{"istio.io/rev": "canary"})
	pod := appPod(ns)
	pod.Annotations = map[string]string{
		"traffic.sidecar.istio.io/includeInboundPorts":     "9080",
		"traffic.sidecar.istio.io/excludeInboundPorts":     "9090",
		"traffic.sidecar.istio.io/excludeOutboundPorts":    "5432,6379",
		"traffic.sidecar.istio.io/excludeOutboundIPRanges": "169.254.169.254/32",
		"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8,fd00::/8",
		"sidecar.istio.io/proxyCPU":                        "300m",
		"sidecar.istio.io/proxyMemory":                     "200Mi",
		"sidecar.istio.io/proxyCPULimit":                   "1500m",
		"sidecar.istio.io/proxyMemoryLimit":                "300Mi",
		"proxy.istio.io/config":                            "holdApplicationUntilProxyStarts: true\n",
	}
	got := mustCreate(t, pod)
	assertInjected(t, got, "canary")
	initArgs := container(got.Spec.InitContainers, "istio-init").Args
	for _, want := range []string{
		"--include-inbound-ports=9080",
		"--exclude-inbound-ports=15090,15021,15020,9090",
		"--exclude-outbound-ports=5432,6379",
		"--exclude-outbound-ip-ranges=169.254.169.254/32",
		"--include-outbound-ip-ranges=10.0.0.0/8,fd00::/8",
	} {
		if !slices.Contains(initArgs, want) {
			t.Errorf("istio-init args %v lack %s", initArgs, want)
		}
	}
	proxy, _ := proxyOf(got)
	r := proxy.Resources
	for name, want := range map[string]resource.Quantity{
		"requests.cpu": r.Requests[corev1.ResourceCPU], "requests.memory": r.Requests[corev1.ResourceMemory],
		"limits.cpu": r.Limits[corev1.ResourceCPU], "limits.memory": r.Limits[corev1.ResourceMemory],
	} {
		exp := map[string]string{"requests.cpu": "300m", "requests.memory": "200Mi", "limits.cpu": "1500m", "limits.memory": "300Mi"}[name]
		if want.Cmp(resource.MustParse(exp)) != 0 {
			t.Errorf("proxy %s = %s, want %s", name, want.String(), exp)
		}
	}
	// Hold with a regular container: first, with a postStart hook that
	// waits for the proxy.
	if got.Spec.Containers[0].Name != "istio-proxy" || proxy.Lifecycle == nil || proxy.Lifecycle.PostStart == nil ||
		strings.Join(proxy.Lifecycle.PostStart.Exec.Command, " ") != "/usr/local/bin/proxy wait" {
		t.Errorf("holdApplicationUntilProxyStarts from proxy.istio.io/config not applied: %+v", proxy.Lifecycle)
	}
}
