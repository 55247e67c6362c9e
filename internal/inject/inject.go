package inject

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// Names Istio users know.
const (
	InitContainerName  = "istio-init"
	ProxyContainerName = "istio-proxy"

	LabelInject       = "sidecar.istio.io/inject"
	LabelRev          = "istio.io/rev"
	LabelTLSMode      = "security.istio.io/tlsMode"
	LabelCanonicalN   = "service.istio.io/canonical-name"
	LabelCanonicalRev = "service.istio.io/canonical-revision"

	AnnotationStatus           = "sidecar.istio.io/status"
	AnnotationProxyConfig      = "proxy.istio.io/config"
	AnnotationProxyCPU         = "sidecar.istio.io/proxyCPU"
	AnnotationProxyMemory      = "sidecar.istio.io/proxyMemory"
	AnnotationProxyCPULimit    = "sidecar.istio.io/proxyCPULimit"
	AnnotationProxyMemoryLimit = "sidecar.istio.io/proxyMemoryLimit"
	AnnotationLogLevel         = "sidecar.istio.io/logLevel"
	AnnotationNativeSidecar    = "sidecar.istio.io/nativeSidecar"
	AnnotationRewriteProbes    = "sidecar.istio.io/rewriteAppHTTPProbers"
	AnnotationIncludeInbound   = "traffic.sidecar.istio.io/includeInboundPorts"
	AnnotationExcludeInbound   = "traffic.sidecar.istio.io/excludeInboundPorts"
	AnnotationExcludeOutbound  = "traffic.sidecar.istio.io/excludeOutboundPorts"
	AnnotationExcludeOutRanges = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	AnnotationIncludeOutRanges = "traffic.sidecar.istio.io/includeOutboundIPRanges"
	AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"
	AnnotationDefaultLogs      = "kubectl.kubernetes.io/default-logs-container"

	// EnvAppProbers carries the rewritten probes' originals to the proxy.
	EnvAppProbers = "ISTIO_KUBE_APP_PROBERS"
	// EnvPrometheusAnnotations carries the app's prometheus.io annotations
	// to the proxy when metrics are merged.
	EnvPrometheusAnnotations = "ISTIO_PROMETHEUS_ANNOTATIONS"

	AnnotationMergeMetrics = "prometheus.istio.io/merge-metrics"
	AnnotationPromScrape   = "prometheus.io/scrape"
	AnnotationPromPort     = "prometheus.io/port"
	AnnotationPromPath     = "prometheus.io/path"

	proxyBinary = "/usr/local/bin/proxy"
	proxyUID    = int64(1337)

	portStatus   = 15020 // app probes through the proxy
	portHealth   = 15021 // proxy readiness
	portPrometh  = 15090 // proxy metrics
	portOutbound = 15001
	portInbound  = 15006
)

// AnnotationError is a malformed pod annotation; the pod is denied.
type AnnotationError struct {
	Annotation string
	Value      string
	Err        error
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q is invalid: %v", e.Annotation, e.Value, e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }

// Injected reports whether pod already has the sidecar.
func Injected(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[AnnotationStatus]; ok {
		return true
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ProxyContainerName {
			return true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == ProxyContainerName {
			return true
		}
	}
	return false
}

// Skip returns why pod must not be injected, or "" if it must be. The
// webhook configuration's selectors choose the pods; this re-checks the
// rules that must hold whatever those selectors say.
func Skip(pod *corev1.Pod, cfg *Config) string {
	ns := pod.Namespace
	switch {
	case pod.Spec.HostNetwork:
		return "hostNetwork pod"
	case ns == "kube-system" || ns == "kube-public" || ns == "kube-node-lease":
		return "namespace " + ns + " is never injected"
	case cfg.MeshNamespace != "" && ns == cfg.MeshNamespace:
		return "the mesh namespace is never injected"
	case Injected(pod):
		return "already injected"
	}
	for _, n := range cfg.Values.Sidecar.ExcludeNamespaces {
		if n == ns {
			return "namespace " + ns + " is excluded"
		}
	}
	explicit := ""
	if v, ok := pod.Labels[LabelInject]; ok {
		explicit = v
	} else if v, ok := pod.Annotations[LabelInject]; ok {
		explicit = v
	}
	if explicit != "" {
		if b, err := parseBool(explicit); err == nil {
			if !b {
				return LabelInject + "=false"
			}
			return ""
		}
	}
	set := labels.Set(pod.Labels)
	for _, s := range cfg.never {
		if s.Matches(set) {
			return "matches neverInjectSelector"
		}
	}
	if cfg.Policy.Policy == "disabled" {
		for _, s := range cfg.always {
			if s.Matches(set) {
				return ""
			}
		}
		return "injection policy is disabled"
	}
	return ""
}

// Status is the sidecar.istio.io/status annotation.
type Status struct {
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
	Volumes          []string `json:"volumes"`
	ImagePullSecrets []string `json:"imagePullSecrets"`
	Revision         string   `json:"revision"`
}

// Inject returns a copy of pod with the sidecar added. It does not check
// whether the pod should be injected (see Skip); a pod that already has the
// sidecar is returned unchanged. Malformed annotations give an
// *AnnotationError.
func Inject(pod *corev1.Pod, cfg *Config) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	if Injected(pod) {
		return out, nil
	}
	ann := pod.Annotations

	pc := cfg.Values.MeshConfig.DefaultConfig
	if v, ok := ann[AnnotationProxyConfig]; ok {
		var podPC ProxyConfig
		if err := yaml.Unmarshal([]byte(v), &podPC); err != nil {
			return nil, &AnnotationError{AnnotationProxyConfig, v, err}
		}
		pc = pc.merge(podPC)
	}
	hold := cfg.Values.Sidecar.HoldApplicationUntilProxyStarts
	if pc.HoldApplicationUntilProxyStarts != nil {
		hold = *pc.HoldApplicationUntilProxyStarts
	}

	native := cfg.NativeSidecarsSupported
	switch cfg.Values.Sidecar.NativeSidecar {
	case NativeTrue:
		native = true
	case NativeFalse:
		native = false
	}
	if v, ok := ann[AnnotationNativeSidecar]; ok {
		b, err := parseBool(v)
		if err != nil {
			return nil, &AnnotationError{AnnotationNativeSidecar, v, err}
		}
		native = b
	}

	res, err := proxyResources(cfg.Values.Sidecar.Resources, ann)
	if err != nil {
		return nil, err
	}
	initArgs, err := captureArgs(pod)
	if err != nil {
		return nil, err
	}
	rewrite := true
	if v, ok := ann[AnnotationRewriteProbes]; ok {
		b, err := parseBool(v)
		if err != nil {
			return nil, &AnnotationError{AnnotationRewriteProbes, v, err}
		}
		rewrite = b
	}
	logLevel := cfg.Values.Sidecar.LogLevel
	if v, ok := ann[AnnotationLogLevel]; ok {
		switch v {
		case "trace", "debug", "info", "warning", "error", "critical", "off":
			logLevel = v
		default:
			return nil, &AnnotationError{AnnotationLogLevel, v, fmt.Errorf("not one of trace, debug, info, warning, error, critical, off")}
		}
	}
	if logLevel == "" {
		logLevel = "warning"
	}

	// Probes go through the proxy so that the kubelet reaches the app under
	// STRICT mTLS; the originals travel to the proxy in its environment.
	var probers string
	if rewrite {
		probers, err = rewriteProbes(out)
		if err != nil {
			return nil, err
		}
	}

	image := cfg.image()
	pull := corev1.PullPolicy(cfg.Values.Global.ImagePullPolicy)

	initC := corev1.Container{
		Name:            InitContainerName,
		Image:           image,
		ImagePullPolicy: pull,
		Command:         []string{proxyBinary},
		Args:            initArgs,
		Resources:       *res.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(false),
			RunAsUser:                ptr.To(int64(0)),
			RunAsGroup:               ptr.To(int64(0)),
			RunAsNonRoot:             ptr.To(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}

	proxy := proxyContainer(pod, cfg, pc, res, logLevel, probers)
	merge, err := prometheusMerge(out, cfg)
	if err != nil {
		return nil, err
	}
	if merge != "" {
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: EnvPrometheusAnnotations, Value: merge})
	}
	if native {
		proxy.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		// A native sidecar's startup probe holds the app containers until
		// the proxy is ready: holdApplicationUntilProxyStarts is inherent.
		proxy.StartupProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz/ready", Port: intstr.FromInt32(portHealth), Scheme: corev1.URISchemeHTTP,
			}},
			TimeoutSeconds: 3, PeriodSeconds: 1, FailureThreshold: 600, SuccessThreshold: 1,
		}
	} else if hold {
		proxy.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{proxyBinary, "wait"}},
		}}
	}

	appNames := make([]string, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		appNames = append(appNames, c.Name)
	}

	status := Status{Revision: cfg.revision()}
	if native {
		out.Spec.InitContainers = append([]corev1.Container{initC, proxy}, out.Spec.InitContainers...)
		status.InitContainers = []string{InitContainerName, ProxyContainerName}
		status.Containers = []string{}
	} else {
		out.Spec.InitContainers = append([]corev1.Container{initC}, out.Spec.InitContainers...)
		// First, so that with holdApplicationUntilProxyStarts the kubelet
		// waits for its postStart hook before starting the app.
		out.Spec.Containers = append([]corev1.Container{proxy}, out.Spec.Containers...)
		status.InitContainers = []string{InitContainerName}
		status.Containers = []string{ProxyContainerName}
	}
	vols := proxyVolumes()
	for _, v := range vols {
		status.Volumes = append(status.Volumes, v.Name)
	}
	out.Spec.Volumes = append(out.Spec.Volumes, vols...)
	// The projected token needs a service account; the API server's
	// ServiceAccount admission sets "default" the same way, but it may run
	// after this webhook or not at all.
	if out.Spec.ServiceAccountName == "" {
		out.Spec.ServiceAccountName = "default"
	}
	for _, s := range cfg.Values.Global.ImagePullSecrets {
		if !hasPullSecret(out, s) {
			out.Spec.ImagePullSecrets = append(out.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
			status.ImagePullSecrets = append(status.ImagePullSecrets, s)
		}
	}

	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	setDefault(out.Labels, LabelTLSMode, "istio")
	name, rev := canonical(pod)
	setDefault(out.Labels, LabelCanonicalN, name)
	setDefault(out.Labels, LabelCanonicalRev, rev)
	setDefault(out.Labels, LabelRev, cfg.revision())
	if len(appNames) > 0 {
		setDefault(out.Annotations, AnnotationDefaultContainer, appNames[0])
		setDefault(out.Annotations, AnnotationDefaultLogs, appNames[0])
	}
	st, _ := json.Marshal(status)
	out.Annotations[AnnotationStatus] = string(st)
	return out, nil
}

// prometheusMerge points out's prometheus.io annotations at the proxy's
// status port, where the proxy serves its own metrics followed by the
// app's, and returns the app's original annotations as JSON for the proxy
// ("" when nothing is merged). Merging is on unless meshConfig's
// enablePrometheusMerge or the pod's prometheus.istio.io/merge-metrics
// annotation turn it off; a pod that says prometheus.io/scrape: "false" is
// left alone.
func prometheusMerge(out *corev1.Pod, cfg *Config) (string, error) {
	enabled := true
	if b := cfg.Values.MeshConfig.EnablePrometheusMerge; b != nil {
		enabled = *b
	}
	ann := out.Annotations
	if v, ok := ann[AnnotationMergeMetrics]; ok {
		b, err := parseBool(v)
		if err != nil {
			return "", &AnnotationError{AnnotationMergeMetrics, v, err}
		}
		enabled = b
	}
	if !enabled {
		return "", nil
	}
	if v, ok := ann[AnnotationPromScrape]; ok {
		if b, err := parseBool(v); err == nil && !b {
			return "", nil
		}
	}
	app := map[string]string{}
	for key, field := range map[string]string{AnnotationPromScrape: "scrape", AnnotationPromPort: "port", AnnotationPromPath: "path"} {
		if v, ok := ann[key]; ok {
			app[field] = strings.TrimSpace(v)
		}
	}
	if app["scrape"] != "" {
		b, _ := parseBool(app["scrape"])
		app["scrape"] = strconv.FormatBool(b)
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationPromScrape] = "true"
	out.Annotations[AnnotationPromPort] = strconv.Itoa(portStatus)
	out.Annotations[AnnotationPromPath] = "/stats/prometheus"
	if len(app) == 0 {
		return "", nil
	}
	b, err := json.Marshal(app)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func setDefault(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func hasPullSecret(pod *corev1.Pod, name string) bool {
	for _, s := range pod.Spec.ImagePullSecrets {
		if s.Name == name {
			return true
		}
	}
	return false
}

// canonical returns the canonical service name and revision of pod, as
// Istio derives them: well-known labels first, else the workload's name.
func canonical(pod *corev1.Pod) (string, string) {
	name := pod.Labels["app.kubernetes.io/name"]
	if name == "" {
		name = pod.Labels["app"]
	}
	if name == "" {
		name = workloadName(pod)
	}
	rev := pod.Labels["app.kubernetes.io/version"]
	if rev == "" {
		rev = pod.Labels["version"]
	}
	if rev == "" {
		rev = "latest"
	}
	return name, rev
}

// workloadName is the Deployment's name for a pod of a ReplicaSet it owns,
// else the owner's or the pod's name.
func workloadName(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return strings.TrimSuffix(o.Name, "-"+h)
			}
		}
		return o.Name
	}
	if pod.Name != "" {
		return pod.Name
	}
	return strings.TrimSuffix(pod.GenerateName, "-")
}

func proxyResources(def corev1.ResourceRequirements, ann map[string]string) (corev1.ResourceRequirements, error) {
	res := *def.DeepCopy()
	set := func(key string, list *corev1.ResourceList, name corev1.ResourceName) error {
		v, ok := ann[key]
		if !ok {
			return nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return &AnnotationError{key, v, err}
		}
		if q.Sign() < 0 {
			return &AnnotationError{key, v, fmt.Errorf("must not be negative")}
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
		return nil
	}
	for _, s := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationProxyCPU, &res.Requests, corev1.ResourceCPU},
		{AnnotationProxyMemory, &res.Requests, corev1.ResourceMemory},
		{AnnotationProxyCPULimit, &res.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemoryLimit, &res.Limits, corev1.ResourceMemory},
	} {
		if err := set(s.key, s.list, s.name); err != nil {
			return res, err
		}
	}
	// A request above its limit would make the API server reject the pod
	// with a message about the proxy; name the annotation instead.
	for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okR := res.Requests[n]
		lim, okL := res.Limits[n]
		if okR && okL && req.Cmp(lim) > 0 {
			key, val := AnnotationProxyCPU, ann[AnnotationProxyCPU]
			if n == corev1.ResourceMemory {
				key, val = AnnotationProxyMemory, ann[AnnotationProxyMemory]
			}
			if _, ok := ann[key]; !ok {
				key = AnnotationProxyCPULimit
				if n == corev1.ResourceMemory {
					key = AnnotationProxyMemoryLimit
				}
				val = ann[key]
			}
			return res, &AnnotationError{key, val, fmt.Errorf("proxy %s request %s exceeds its limit %s", n, req.String(), lim.String())}
		}
	}
	return res, nil
}

// captureArgs are the arguments of "proxy init" from the traffic annotations.
func captureArgs(pod *corev1.Pod) ([]string, error) {
	ann := pod.Annotations
	// Lists are passed on normalized: "80, 443" becomes "80,443".
	get := func(k, def string) string {
		v, ok := ann[k]
		if !ok {
			return def
		}
		parts := strings.Split(v, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return strings.Join(parts, ",")
	}
	includeIn := get(AnnotationIncludeInbound, "*")
	if includeIn != "*" {
		if err := validatePorts(includeIn); err != nil {
			return nil, &AnnotationError{AnnotationIncludeInbound, ann[AnnotationIncludeInbound], err}
		}
	}
	excludeIn := get(AnnotationExcludeInbound, "")
	if err := validatePorts(excludeIn); err != nil {
		return nil, &AnnotationError{AnnotationExcludeInbound, ann[AnnotationExcludeInbound], err}
	}
	// The proxy's own ports are never captured.
	own := strconv.Itoa(portPrometh) + "," + strconv.Itoa(portHealth) + "," + strconv.Itoa(portStatus)
	if excludeIn == "" {
		excludeIn = own
	} else {
		excludeIn = own + "," + excludeIn
	}
	excludeOut := get(AnnotationExcludeOutbound, "")
	if err := validatePorts(excludeOut); err != nil {
		return nil, &AnnotationError{AnnotationExcludeOutbound, ann[AnnotationExcludeOutbound], err}
	}
	includeRanges := get(AnnotationIncludeOutRanges, "*")
	if includeRanges != "*" {
		if err := validateCIDRs(includeRanges); err != nil {
			return nil, &AnnotationError{AnnotationIncludeOutRanges, ann[AnnotationIncludeOutRanges], err}
		}
	}
	excludeRanges := get(AnnotationExcludeOutRanges, "")
	if err := validateCIDRs(excludeRanges); err != nil {
		return nil, &AnnotationError{AnnotationExcludeOutRanges, ann[AnnotationExcludeOutRanges], err}
	}
	return []string{
		"init",
		"--proxy-uid=" + strconv.FormatInt(proxyUID, 10),
		"--proxy-gid=" + strconv.FormatInt(proxyUID, 10),
		"--outbound-capture-port=" + strconv.Itoa(portOutbound),
		"--inbound-capture-port=" + strconv.Itoa(portInbound),
		"--include-inbound-ports=" + includeIn,
		"--exclude-inbound-ports=" + excludeIn,
		"--exclude-outbound-ports=" + excludeOut,
		"--include-outbound-ip-ranges=" + includeRanges,
		"--exclude-outbound-ip-ranges=" + excludeRanges,
	}, nil
}

func validatePorts(list string) error {
	if list == "" {
		return nil
	}
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q is not a port (1-65535)", p)
		}
	}
	return nil
}

func validateCIDRs(list string) error {
	if list == "" {
		return nil
	}
	for _, r := range strings.Split(list, ",") {
		r = strings.TrimSpace(r)
		if _, err := netip.ParsePrefix(r); err != nil {
			return fmt.Errorf("%q is not a CIDR range", r)
		}
	}
	return nil
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

func proxyContainer(pod *corev1.Pod, cfg *Config, pc ProxyConfig, res corev1.ResourceRequirements, logLevel, probers string) corev1.Container {
	pc.DiscoveryAddress = cfg.discoveryAddress(pc)
	pcJSON, _ := json.Marshal(pc)
	var appNames []string
	type port struct {
		Name          string `json:"name,omitempty"`
		ContainerPort int32  `json:"containerPort"`
		Protocol      string `json:"protocol,omitempty"`
	}
	var ports []port
	for _, c := range pod.Spec.Containers {
		appNames = append(appNames, c.Name)
		for _, p := range c.Ports {
			ports = append(ports, port{p.Name, p.ContainerPort, string(p.Protocol)})
		}
	}
	portsJSON := "[]"
	if len(ports) > 0 {
		b, _ := json.Marshal(ports)
		portsJSON = string(b)
	}
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("INSTANCE_IP", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		fieldEnv("HOST_IP", "status.hostIP"),
		{Name: "ISTIO_CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
		{Name: "REVISION", Value: cfg.revision()},
		{Name: "DISCOVERY_ADDRESS", Value: pc.DiscoveryAddress},
		{Name: "CA_ADDRESS", Value: pc.DiscoveryAddress},
		{Name: "TRUST_DOMAIN", Value: cfg.trustDomain()},
		{Name: "PROXY_CONFIG", Value: string(pcJSON)},
		{Name: "ISTIO_META_POD_PORTS", Value: portsJSON},
		{Name: "ISTIO_META_APP_CONTAINERS", Value: strings.Join(appNames, ",")},
		{Name: "ISTIO_META_CLUSTER_ID", Value: "Kubernetes"},
		{Name: "ISTIO_META_INTERCEPTION_MODE", Value: "REDIRECT"},
		{Name: "ISTIO_META_MESH_ID", Value: cfg.trustDomain()},
		{Name: "ISTIO_META_WORKLOAD_NAME", Value: workloadName(pod)},
	}
	if probers != "" {
		env = append(env, corev1.EnvVar{Name: EnvAppProbers, Value: probers})
	}
	keys := make([]string, 0, len(pc.ProxyMetadata))
	for k := range pc.ProxyMetadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, corev1.EnvVar{Name: k, Value: pc.ProxyMetadata[k]})
	}
	return corev1.Container{
		Name:            ProxyContainerName,
		Image:           cfg.image(),
		ImagePullPolicy: corev1.PullPolicy(cfg.Values.Global.ImagePullPolicy),
		Command:         []string{proxyBinary},
		Args:            []string{"sidecar", "--log-level=" + logLevel},
		Ports: []corev1.ContainerPort{
			{Name: "http-envoy-prom", ContainerPort: portPrometh, Protocol: corev1.ProtocolTCP},
		},
		Env:       env,
		Resources: res,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz/ready", Port: intstr.FromInt32(portHealth), Scheme: corev1.URISchemeHTTP,
			}},
			TimeoutSeconds: 3, PeriodSeconds: 15, FailureThreshold: 4, SuccessThreshold: 1,
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsUser:                ptr.To(proxyUID),
			RunAsGroup:               ptr.To(proxyUID),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "workload-certs", MountPath: "/var/run/secrets/workload-spiffe-credentials"},
			{Name: "istiod-ca-cert", MountPath: "/var/run/secrets/istio", ReadOnly: true},
			{Name: "istio-data", MountPath: "/var/lib/istio/data"},
			{Name: "istio-envoy", MountPath: "/etc/istio/proxy"},
			{Name: "istio-token", MountPath: "/var/run/secrets/tokens", ReadOnly: true},
			{Name: "istio-podinfo", MountPath: "/etc/istio/pod", ReadOnly: true},
			{Name: "istio-tmp", MountPath: "/tmp"},
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}

func proxyVolumes() []corev1.Volume {
	empty := func(name string, medium corev1.StorageMedium) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: medium}}}
	}
	return []corev1.Volume{
		empty("workload-certs", ""),
		empty("istio-envoy", corev1.StorageMediumMemory),
		empty("istio-data", ""),
		empty("istio-tmp", ""),
		{Name: "istio-podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels"}},
				{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations"}},
			},
		}}},
		{Name: "istio-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: "istio-ca", ExpirationSeconds: ptr.To(int64(43200)), Path: "istio-token",
			}}},
		}}},
		{Name: "istiod-ca-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"},
			Optional:             ptr.To(true),
		}}},
	}
}

// prober is one original probe, as the proxy's status port replays it.
type prober struct {
	HTTPGet        *corev1.HTTPGetAction `json:"httpGet"`
	TimeoutSeconds int32                 `json:"timeoutSeconds,omitempty"`
}

// rewriteProbes points the HTTP probes of the app containers at the
// proxy's status port and returns the originals as JSON ("" if none).
func rewriteProbes(pod *corev1.Pod) (string, error) {
	probers := map[string]prober{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, p := range []struct {
			probe *corev1.Probe
			kind  string
		}{{c.LivenessProbe, "livez"}, {c.ReadinessProbe, "readyz"}, {c.StartupProbe, "startupz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				continue
			}
			orig := p.probe.HTTPGet.DeepCopy()
			if orig.Port.Type == intstr.String {
				n, ok := namedPort(c, orig.Port.StrVal)
				if !ok {
					// The API server rejects the pod with a precise message.
					continue
				}
				orig.Port = intstr.FromInt32(n)
			}
			if orig.Scheme == "" {
				orig.Scheme = corev1.URISchemeHTTP
			}
			path := "/app-health/" + c.Name + "/" + p.kind
			probers[path] = prober{HTTPGet: orig, TimeoutSeconds: p.probe.TimeoutSeconds}
			p.probe.HTTPGet = &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(portStatus), Scheme: corev1.URISchemeHTTP}
		}
	}
	if len(probers) == 0 {
		return "", nil
	}
	b, err := json.Marshal(probers) // map keys are sorted: stable output
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func namedPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}
