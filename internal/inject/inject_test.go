package inject

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/golden"
)

const appPod = `
apiVersion: v1
kind: Pod
metadata:
  generateName: reviews-v1-5d8b9c7f6d-
  namespace: bookinfo
  labels:
    app: reviews
    version: v1
    pod-template-hash: 5d8b9c7f6d
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: reviews-v1-5d8b9c7f6d
    uid: 0c4f1a7e-0000-4000-8000-000000000001
    controller: true
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: reviews
    image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.1
    ports:
    - name: http
      containerPort: 9080
    livenessProbe:
      httpGet:
        path: /health
        port: http
      timeoutSeconds: 2
    readinessProbe:
      httpGet:
        path: /ready
        port: 9080
        scheme: HTTP
    startupProbe:
      tcpSocket:
        port: 9080
`

// TestInjectGolden keeps the injected pods in testdata/ (run with -update
// to rewrite them after an intended change).
func TestInjectGolden(t *testing.T) {
	cases := []struct {
		name, spec string
		native     bool
		annotate   map[string]string
	}{
		{name: "native", spec: "profile: minimal", native: true},
		{name: "regular", spec: "profile: minimal", native: false},
		{name: "regular-hold-meshconfig", native: false, spec: `
profile: minimal
meshConfig:
  defaultConfig:
    holdApplicationUntilProxyStarts: true
`},
		{name: "annotations", spec: "profile: minimal", native: true, annotate: map[string]string{
			AnnotationIncludeInbound:   "9080,9443",
			AnnotationExcludeInbound:   "8081",
			AnnotationExcludeOutbound:  "5432, 6379",
			AnnotationExcludeOutRanges: "10.96.0.0/12,169.254.169.254/32",
			AnnotationIncludeOutRanges: "10.0.0.0/8",
			AnnotationProxyCPU:         "250m",
			AnnotationProxyMemory:      "256Mi",
			AnnotationProxyCPULimit:    "1",
			AnnotationProxyMemoryLimit: "512Mi",
			AnnotationProxyConfig:      "holdApplicationUntilProxyStarts: true\nconcurrency: 2\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n",
			AnnotationRewriteProbes:    "true",
			AnnotationPromScrape:       "true",
			AnnotationPromPort:         "9080",
			AnnotationPromPath:         "/stats",
		}},
		{name: "canary-revision", native: false, spec: `
profile: minimal
revision: canary
namespace: mesh-canary
values:
  injector:
    sidecar:
      nativeSidecar: false
      logLevel: info
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := chartConfig(t, tc.spec)
			cfg.NativeSidecarsSupported = tc.native
			pod := &corev1.Pod{}
			mustYAML(t, appPod, pod)
			for k, v := range tc.annotate {
				if pod.Annotations == nil {
					pod.Annotations = map[string]string{}
				}
				pod.Annotations[k] = v
			}
			out, err := Inject(pod, cfg)
			if err != nil {
				t.Fatal(err)
			}
			data, err := yaml.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			golden.AssertYAML(t, filepath.Join("testdata", tc.name+".yaml"), data)
		})
	}
}

func inject(t *testing.T, cfg *Config, mutate func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	mustYAML(t, appPod, pod)
	if mutate != nil {
		mutate(pod)
	}
	out, err := Inject(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func findContainer(list []corev1.Container, name string) *corev1.Container {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func env(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestNativeSidecarPlacement(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal")
	cfg.NativeSidecarsSupported = true
	out := inject(t, cfg, func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "busybox"}}
	})
	var names []string
	for _, c := range out.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "istio-init,istio-proxy,migrate" {
		t.Fatalf("init containers %v", names)
	}
	proxy := &out.Spec.InitContainers[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways || proxy.StartupProbe == nil {
		t.Fatalf("proxy is not a native sidecar with a startup probe: %+v", proxy)
	}
	if len(out.Spec.Containers) != 1 || out.Spec.Containers[0].Name != "reviews" {
		t.Fatalf("containers %+v", out.Spec.Containers)
	}

	// sidecar.nativeSidecar false wins over the cluster's support...
	cfg.Values.Sidecar.NativeSidecar = NativeFalse
	out = inject(t, cfg, nil)
	if out.Spec.Containers[0].Name != ProxyContainerName || len(out.Spec.InitContainers) != 1 {
		t.Fatalf("with nativeSidecar=false the proxy must be the first container: %v", out.Spec.Containers)
	}
	// ...and true forces it on a cluster without native sidecars.
	cfg.Values.Sidecar.NativeSidecar = NativeTrue
	cfg.NativeSidecarsSupported = false
	out = inject(t, cfg, nil)
	if findContainer(out.Spec.InitContainers, ProxyContainerName) == nil {
		t.Fatal("with nativeSidecar=true the proxy must be an init container")
	}
	// auto follows the cluster.
	cfg.Values.Sidecar.NativeSidecar = NativeAuto
	out = inject(t, cfg, nil)
	if findContainer(out.Spec.Containers, ProxyContainerName) == nil {
		t.Fatal("auto on a cluster without native sidecars must give a regular container")
	}
}

func TestHoldApplication(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal")
	cfg.NativeSidecarsSupported = false
	out := inject(t, cfg, nil)
	if out.Spec.Containers[0].Lifecycle != nil {
		t.Fatal("no hold asked, but the proxy has a postStart hook")
	}
	out = inject(t, cfg, func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationProxyConfig: `{"holdApplicationUntilProxyStarts": true}`}
	})
	proxy := out.Spec.Containers[0]
	if proxy.Name != ProxyContainerName || proxy.Lifecycle == nil || proxy.Lifecycle.PostStart == nil ||
		strings.Join(proxy.Lifecycle.PostStart.Exec.Command, " ") != "/usr/local/bin/proxy wait" {
		t.Fatalf("hold from proxy.istio.io/config: proxy %+v", proxy)
	}
	// The pod annotation overrides meshConfig.
	cfg.Values.MeshConfig.DefaultConfig.HoldApplicationUntilProxyStarts = ptrTo(true)
	out = inject(t, cfg, func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationProxyConfig: "holdApplicationUntilProxyStarts: false"}
	})
	if out.Spec.Containers[0].Lifecycle != nil {
		t.Fatal("the pod's proxy.istio.io/config did not override meshConfig")
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestProbesRewritten(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal")
	out := inject(t, cfg, nil)
	app := findContainer(out.Spec.Containers, "reviews")
	if g := app.LivenessProbe.HTTPGet; g.Path != "/app-health/reviews/livez" || g.Port.IntValue() != 15020 {
		t.Fatalf("liveness probe %+v", g)
	}
	if g := app.ReadinessProbe.HTTPGet; g.Path != "/app-health/reviews/readyz" || g.Port.IntValue() != 15020 {
		t.Fatalf("readiness probe %+v", g)
	}
	if app.StartupProbe.TCPSocket == nil || app.StartupProbe.HTTPGet != nil {
		t.Fatalf("a TCP probe must be left alone: %+v", app.StartupProbe)
	}
	proxy := findContainer(out.Spec.InitContainers, ProxyContainerName)
	var probers map[string]struct {
		HTTPGet struct {
			Path   string `json:"path"`
			Port   int    `json:"port"`
			Scheme string `json:"scheme"`
		} `json:"httpGet"`
		TimeoutSeconds int `json:"timeoutSeconds"`
	}
	if err := json.Unmarshal([]byte(env(proxy, EnvAppProbers)), &probers); err != nil {
		t.Fatalf("%s: %v", EnvAppProbers, err)
	}
	live := probers["/app-health/reviews/livez"]
	if live.HTTPGet.Path != "/health" || live.HTTPGet.Port != 9080 || live.TimeoutSeconds != 2 {
		t.Fatalf("original liveness probe (named port resolved) not recorded: %+v", probers)
	}
	if probers["/app-health/reviews/readyz"].HTTPGet.Path != "/ready" || len(probers) != 2 {
		t.Fatalf("probers %+v", probers)
	}

	out = inject(t, cfg, func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationRewriteProbes: "false"}
	})
	if out.Spec.Containers[0].LivenessProbe.HTTPGet.Path != "/health" {
		t.Fatal("rewriteAppHTTPProbers=false must keep the probes")
	}
}

func TestLabelsAndStatus(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal")
	out := inject(t, cfg, nil)
	want := map[string]string{
		LabelTLSMode: "istio", LabelCanonicalN: "reviews", LabelCanonicalRev: "v1", LabelRev: "default",
	}
	for k, v := range want {
		if out.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, out.Labels[k], v)
		}
	}
	var st Status
	if err := json.Unmarshal([]byte(out.Annotations[AnnotationStatus]), &st); err != nil {
		t.Fatal(err)
	}
	if strings.Join(st.InitContainers, ",") != "istio-init,istio-proxy" || len(st.Containers) != 0 ||
		strings.Join(st.Volumes, ",") != "workload-certs,istio-envoy,istio-data,istio-tmp,istio-podinfo,istio-token,istiod-ca-cert" {
		t.Fatalf("status %+v", st)
	}
	// Without app labels, the workload's name (the Deployment behind the
	// ReplicaSet) and "latest".
	out = inject(t, cfg, func(p *corev1.Pod) { delete(p.Labels, "app"); delete(p.Labels, "version") })
	if out.Labels[LabelCanonicalN] != "reviews-v1" || out.Labels[LabelCanonicalRev] != "latest" {
		t.Fatalf("canonical labels %v", out.Labels)
	}
	out = inject(t, cfg, func(p *corev1.Pod) {
		p.Labels["app.kubernetes.io/name"] = "ratings"
		p.Labels["app.kubernetes.io/version"] = "2"
	})
	if out.Labels[LabelCanonicalN] != "ratings" || out.Labels[LabelCanonicalRev] != "2" {
		t.Fatalf("canonical labels %v", out.Labels)
	}
}

func TestIdempotent(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal")
	once := inject(t, cfg, nil)
	twice, err := Inject(once, cfg)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := Patch(once, twice)
	if err != nil || patch != nil {
		t.Fatalf("re-injecting an injected pod must change nothing; patch %s, err %v", patch, err)
	}
	if Skip(once, cfg) != "already injected" {
		t.Fatal("an injected pod must be skipped")
	}
}

func TestSkip(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal\nvalues:\n  injector:\n    sidecar:\n      excludeNamespaces: [legacy]")
	cases := map[string]struct {
		mutate func(*corev1.Pod)
		skip   bool
	}{
		"ordinary":            {func(*corev1.Pod) {}, false},
		"hostNetwork":         {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, true},
		"kube-system":         {func(p *corev1.Pod) { p.Namespace = "kube-system" }, true},
		"mesh namespace":      {func(p *corev1.Pod) { p.Namespace = cfg.MeshNamespace }, true},
		"excluded namespace":  {func(p *corev1.Pod) { p.Namespace = "legacy" }, true},
		"label false":         {func(p *corev1.Pod) { p.Labels[LabelInject] = "false" }, true},
		"annotation false":    {func(p *corev1.Pod) { p.Annotations = map[string]string{LabelInject: "false"} }, true},
		"label true":          {func(p *corev1.Pod) { p.Labels[LabelInject] = "true" }, false},
		"already has a proxy": {func(p *corev1.Pod) { p.Spec.Containers[0].Name = ProxyContainerName }, true},
	}
	for name, tc := range cases {
		pod := &corev1.Pod{}
		mustYAML(t, appPod, pod)
		tc.mutate(pod)
		if got := Skip(pod, cfg) != ""; got != tc.skip {
			t.Errorf("%s: skip=%v, want %v (%q)", name, got, tc.skip, Skip(pod, cfg))
		}
	}
}

func TestMalformedAnnotations(t *testing.T) {
	cfg := chartConfig(t, "profile: minimal")
	cases := map[string]string{
		AnnotationProxyCPU:         "lots",
		AnnotationProxyMemory:      "12XB",
		AnnotationProxyCPULimit:    "-1",
		AnnotationProxyMemoryLimit: "1Gb",
		AnnotationIncludeInbound:   "80,http",
		AnnotationExcludeInbound:   "70000",
		AnnotationExcludeOutbound:  "0",
		AnnotationExcludeOutRanges: "10.0.0.0/33",
		AnnotationIncludeOutRanges: "10.0.0.1",
		AnnotationProxyConfig:      "holdApplicationUntilProxyStarts: [",
		AnnotationNativeSidecar:    "maybe",
		AnnotationLogLevel:         "loud",
	}
	for ann, val := range cases {
		pod := &corev1.Pod{}
		mustYAML(t, appPod, pod)
		pod.Annotations = map[string]string{ann: val}
		_, err := Inject(pod, cfg)
		var ae *AnnotationError
		if !errors.As(err, &ae) || ae.Annotation != ann || ae.Value != val {
			t.Errorf("%s=%q: error %v, want an AnnotationError naming it", ann, val, err)
			continue
		}
		if !strings.Contains(err.Error(), ann) || !strings.Contains(err.Error(), val) {
			t.Errorf("message %q does not name the annotation and value", err)
		}
	}
	// A request above the limit names the annotation too.
	pod := &corev1.Pod{}
	mustYAML(t, appPod, pod)
	pod.Annotations = map[string]string{AnnotationProxyMemory: "4Gi"}
	if _, err := Inject(pod, cfg); err == nil || !strings.Contains(err.Error(), AnnotationProxyMemory) {
		t.Errorf("memory request above the default limit: %v", err)
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	if _, err := ParseConfig([]byte("policy: sometimes"), []byte(`{"global":{"hub":"h","image":"i","tag":"t"}}`)); err == nil {
		t.Error("a bad policy was accepted")
	}
	if _, err := ParseConfig([]byte("policy: enabled"), []byte(`{"global":{"hub":"h"}}`)); err == nil {
		t.Error("values without an image were accepted")
	}
	if _, err := ParseConfig([]byte("policy: enabled"), []byte(`{"global":{"hub":"h","image":"i","tag":"t"},"sidecar":{"nativeSidecar":"perhaps"}}`)); err == nil {
		t.Error("a bad nativeSidecar was accepted")
	}
	c, err := ParseConfig([]byte("policy: enabled"), []byte(`{"global":{"hub":"h","image":"i","tag":"t"},"sidecar":{"nativeSidecar":false}}`))
	if err != nil || c.Values.Sidecar.NativeSidecar != NativeFalse {
		t.Fatalf("nativeSidecar as a boolean: %v %v", c, err)
	}
}

// Metrics merging: the pod's prometheus.io annotations point at the
// proxy's status port and the app's own travel to the proxy; meshConfig
// and the pod can turn it off, and scrape: "false" is left alone.
func TestPrometheusMerge(t *testing.T) {
	envOf := func(p *corev1.Pod) (string, bool) {
		for _, e := range findContainer(p.Spec.Containers, ProxyContainerName).Env {
			if e.Name == EnvPrometheusAnnotations {
				return e.Value, true
			}
		}
		return "", false
	}
	annotate := func(kv ...string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			for i := 0; i < len(kv); i += 2 {
				p.Annotations[kv[i]] = kv[i+1]
			}
		}
	}
	minimal := chartConfig(t, "profile: minimal")
	cfg := *minimal
	cfg.NativeSidecarsSupported = false
	noMerge := cfg
	noMerge.Values.MeshConfig.EnablePrometheusMerge = ptr.To(false)

	for _, tc := range []struct {
		name      string
		cfg       *Config
		mutate    func(*corev1.Pod)
		wantPort  string // prometheus.io/port after injection ("" = absent)
		wantEnv   string // "" = no env
		wantError string
	}{
		{name: "no app annotations", cfg: &cfg, wantPort: "15020"},
		{name: "app scraped", cfg: &cfg, mutate: annotate(AnnotationPromScrape, "true", AnnotationPromPort, "9090", AnnotationPromPath, "/metrics"),
			wantPort: "15020", wantEnv: `{"path":"/metrics","port":"9090","scrape":"true"}`},
		{name: "scrape false", cfg: &cfg, mutate: annotate(AnnotationPromScrape, "false", AnnotationPromPort, "9090"), wantPort: "9090"},
		{name: "pod opts out", cfg: &cfg, mutate: annotate(AnnotationMergeMetrics, "false", AnnotationPromPort, "9090"), wantPort: "9090"},
		{name: "mesh off", cfg: &noMerge},
		{name: "mesh off, pod opts in", cfg: &noMerge, mutate: annotate(AnnotationMergeMetrics, "true"), wantPort: "15020"},
		{name: "bad annotation", cfg: &cfg, mutate: annotate(AnnotationMergeMetrics, "maybe"), wantError: AnnotationMergeMetrics},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{}
			mustYAML(t, appPod, pod)
			if tc.mutate != nil {
				tc.mutate(pod)
			}
			out, err := Inject(pod, tc.cfg)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := out.Annotations[AnnotationPromPort]; got != tc.wantPort {
				t.Errorf("prometheus.io/port %q, want %q", got, tc.wantPort)
			}
			if tc.wantPort == "15020" && (out.Annotations[AnnotationPromPath] != "/stats/prometheus" || out.Annotations[AnnotationPromScrape] != "true") {
				t.Errorf("annotations %v", out.Annotations)
			}
			env, ok := envOf(out)
			if env != tc.wantEnv || ok != (tc.wantEnv != "") {
				t.Errorf("%s=%q (set %v), want %q", EnvPrometheusAnnotations, env, ok, tc.wantEnv)
			}
		})
	}
}
