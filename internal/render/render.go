// Package render turns an effective MeshInstall spec (profile already layered
// in) into the Kubernetes objects of every enabled component, by rendering the
// embedded Helm charts in-process with Helm's engine. It talks to no cluster.
package render

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/profile"
)

// Labels every rendered object carries.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "mizzen-operator"
	// LabelOwner names the MeshInstall an object belongs to.
	LabelOwner = "install.mizzen.dev/name"
	// LabelComponent names the component an object belongs to.
	LabelComponent = "install.mizzen.dev/component"
)

// Component names that are not gateways.
const (
	ComponentBase         = "base"
	ComponentNamespace    = "namespace"
	ComponentControlPlane = "controlplane"
	ComponentInjector     = "injector"
	ComponentPrometheus   = "prometheus"
	ComponentGrafana      = "grafana"
	ComponentJaeger       = "jaeger"
	ComponentKiali        = "kiali"
)

// GatewayComponent returns the component name of an ingress or egress gateway.
func GatewayComponent(kind, name string) string { return kind + "." + name }

// Chart names, which are also the keys of spec.values.
const (
	chartBase         = "base"
	chartControlPlane = "controlplane"
	chartInjector     = "injector"
	chartGateway      = "gateway"
	valuesGlobal      = "global"
)

// ValuesKeys are the keys spec.values accepts.
var ValuesKeys = []string{valuesGlobal, chartBase, chartControlPlane, chartInjector, chartGateway,
	ComponentPrometheus, ComponentGrafana, ComponentJaeger, ComponentKiali}

// Options are the facts about the operator that the spec does not hold.
type Options struct {
	// Version is the mesh version to run (the image tag).
	Version string
	// Hub is the image repository prefix of the mesh's image.
	Hub string
	// Image is the name of the mesh's image.
	Image string
}

// Component is one part of the mesh and whether the spec enables it.
type Component struct {
	Name    string
	Enabled bool
}

// Result is what a MeshInstall renders to.
type Result struct {
	// Objects are sorted and labelled. They are shared (with later renders
	// of the same inputs, and the CRDs with every render): never modify
	// them; deep-copy first.
	Objects []*unstructured.Unstructured
	// Components are every component the spec knows of, in a stable order.
	Components []Component
	// Digest identifies the inputs of the render (owner, namespace, every
	// chart's values, the embedded charts), and so the rendered objects.
	Digest string
}

// Error is a render failure caused by the spec (bad values, a chart that
// rejects them). Retrying does not help until the spec changes.
type Error struct {
	Component string
	Err       error
}

func (e *Error) Error() string {
	if e.Component == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("rendering %s: %v", e.Component, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

type release struct {
	component string
	chart     string
	values    map[string]any
}

// RenderUserSpec layers a user's spec over its profile and renders it, as
// the operator does.
func RenderUserSpec(owner string, user *v1alpha1.MeshInstallSpec, opts Options) (*Result, error) {
	spec, err := profile.Apply(user)
	if err != nil {
		return nil, err
	}
	return Render(owner, spec, opts)
}

// Render renders the effective spec of the MeshInstall called owner.
func Render(owner string, spec *v1alpha1.MeshInstallSpec, opts Options) (*Result, error) {
	return new(Renderer).Render(owner, spec, opts)
}

// Renderer renders MeshInstalls and hands back the previous result of an
// owner while its inputs are unchanged, so that a reconcile that changes
// nothing does not run Helm. The zero value is ready to use.
type Renderer struct {
	mu   sync.Mutex
	last map[string]*Result
}

// Render renders the effective spec of the MeshInstall called owner.
func (r *Renderer) Render(owner string, spec *v1alpha1.MeshInstallSpec, opts Options) (*Result, error) {
	ns := spec.Namespace
	if ns == "" {
		ns = v1alpha1.DefaultNamespace
	}
	releases, components, err := plan(spec, ns, opts)
	if err != nil {
		return nil, err
	}
	digest, err := inputDigest(owner, ns, releases)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	cached := r.last[owner]
	r.mu.Unlock()
	if cached != nil && cached.Digest == digest {
		return cached, nil
	}
	objects, err := renderObjects(owner, ns, releases)
	if err != nil {
		return nil, err
	}
	res := &Result{Objects: objects, Components: components, Digest: digest}
	r.mu.Lock()
	if r.last == nil {
		r.last = map[string]*Result{}
	}
	r.last[owner] = res
	r.mu.Unlock()
	return res, nil
}

// Forget drops the remembered result of owner.
func (r *Renderer) Forget(owner string) {
	r.mu.Lock()
	delete(r.last, owner)
	r.mu.Unlock()
}

func renderObjects(owner, ns string, releases []release) ([]*unstructured.Unstructured, error) {
	var objects []*unstructured.Unstructured
	for _, r := range releases {
		objs, err := renderRelease(r, ns)
		if err != nil {
			return nil, err
		}
		objects = append(objects, objs...)
	}
	if len(objects) > 0 {
		nsObj := &unstructured.Unstructured{}
		nsObj.SetAPIVersion("v1")
		nsObj.SetKind("Namespace")
		nsObj.SetName(ns)
		nsObj.SetLabels(map[string]string{LabelComponent: ComponentNamespace})
		objects = append(objects, nsObj)
	}
	seen := map[string]string{}
	for _, o := range objects {
		labels := o.GetLabels()
		if !isChartCRD(o) { // the charts' CRDs are labelled once, when loaded
			if labels == nil {
				labels = map[string]string{}
			}
			labels[LabelManagedBy] = ManagedBy
			if !Shared(o) {
				labels[LabelOwner] = owner
			}
			o.SetLabels(labels)
		}
		key := ObjectKey(o)
		if other, dup := seen[key]; dup {
			return nil, &Error{Err: fmt.Errorf("%s is rendered by both %s and %s; give them different names",
				key, other, labels[LabelComponent])}
		}
		seen[key] = labels[LabelComponent]
	}
	sort.SliceStable(objects, func(i, j int) bool { return ObjectKey(objects[i]) < ObjectKey(objects[j]) })
	return objects, nil
}

// inputDigest identifies everything a render depends on.
func inputDigest(owner, ns string, releases []release) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", chartsDigest(), owner, ns)
	for _, r := range releases {
		values, err := json.Marshal(r.values) // map keys are sorted
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %s %s\n", r.component, r.chart, values)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Shared reports whether an object is shared by every MeshInstall that
// renders it and outlives them unless a purge is asked for: the Istio API
// CRDs (deleting them deletes every user's Istio resources) and the mesh
// namespace (users keep their own secrets there, and canary revisions share
// it). Shared objects carry no owner label.
func Shared(o *unstructured.Unstructured) bool {
	gk := o.GroupVersionKind().GroupKind()
	return (gk.Group == "apiextensions.k8s.io" && gk.Kind == "CustomResourceDefinition") || (gk.Group == "" && gk.Kind == "Namespace")
}

// ObjectKey identifies an object: group/kind/namespace/name.
func ObjectKey(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	return gvk.Group + "/" + gvk.Kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

// plan decides which charts to render with which values.
func plan(spec *v1alpha1.MeshInstallSpec, ns string, opts Options) ([]release, []Component, error) {
	user, err := userValues(spec)
	if err != nil {
		return nil, nil, err
	}
	comps := spec.Components
	if comps == nil {
		comps = &v1alpha1.Components{}
	}
	trustDomain := "cluster.local"
	if spec.MeshConfig != nil && spec.MeshConfig.TrustDomain != "" {
		trustDomain = spec.MeshConfig.TrustDomain
	}
	global := profile.MergeMaps(map[string]any{
		"hub":         opts.Hub,
		"image":       opts.Image,
		"tag":         opts.Version,
		"revision":    spec.Revision,
		"trustDomain": trustDomain,
	}, asMap(user[valuesGlobal]))
	meshConfig, err := meshConfigValues(spec, ns, trustDomain)
	if err != nil {
		return nil, nil, err
	}

	var releases []release
	var components []Component
	add := func(component, chart string, enabled bool, values map[string]any) {
		components = append(components, Component{Name: component, Enabled: enabled})
		if !enabled {
			return
		}
		values = profile.MergeMaps(values, asMap(user[chart]))
		values[valuesGlobal] = global
		releases = append(releases, release{component: component, chart: chart, values: values})
	}

	add(ComponentBase, chartBase, comps.Base != nil && isTrue(comps.Base.Enabled, false), map[string]any{})

	var cp v1alpha1.ControlPlaneComponent
	if comps.ControlPlane != nil {
		cp = *comps.ControlPlane
	}
	cpValues, err := workloadValues(cp.WorkloadSettings)
	if err != nil {
		return nil, nil, err
	}
	if len(cp.Env) > 0 {
		cpValues["env"] = stringMap(cp.Env)
	}
	cpValues["meshConfig"] = meshConfig
	add(ComponentControlPlane, chartControlPlane, isTrue(cp.Enabled, false), cpValues)

	var inj v1alpha1.WorkloadComponent
	if comps.Injector != nil {
		inj = *comps.Injector
	}
	injValues, err := workloadValues(inj.WorkloadSettings)
	if err != nil {
		return nil, nil, err
	}
	injValues["meshConfig"] = meshConfig
	if dc := proxyDefaults(spec); dc != nil && dc.HoldApplicationUntilProxyStarts != nil {
		injValues["sidecar"] = map[string]any{"holdApplicationUntilProxyStarts": *dc.HoldApplicationUntilProxyStarts}
	}
	add(ComponentInjector, chartInjector, isTrue(inj.Enabled, false), injValues)

	for _, g := range []struct {
		kind     string
		gateways []v1alpha1.GatewayComponent
	}{{"ingress", comps.IngressGateways}, {"egress", comps.EgressGateways}} {
		for _, gw := range g.gateways {
			values, err := gatewayValues(g.kind, gw)
			if err != nil {
				return nil, nil, err
			}
			add(GatewayComponent(g.kind, gw.Name), chartGateway, isTrue(gw.Enabled, true), values)
		}
	}

	addons := comps.Addons
	if addons == nil {
		addons = &v1alpha1.Addons{}
	}
	var prom v1alpha1.PrometheusAddon
	if addons.Prometheus != nil {
		prom = *addons.Prometheus
	}
	promValues, err := addonValues(prom.AddonComponent)
	if err != nil {
		return nil, nil, err
	}
	if prom.Retention != "" {
		promValues["retention"] = prom.Retention
	}
	add(ComponentPrometheus, ComponentPrometheus, isTrue(prom.Enabled, false), promValues)
	for _, a := range []struct {
		name  string
		addon *v1alpha1.AddonComponent
	}{{ComponentGrafana, addons.Grafana}, {ComponentJaeger, addons.Jaeger}, {ComponentKiali, addons.Kiali}} {
		var ac v1alpha1.AddonComponent
		if a.addon != nil {
			ac = *a.addon
		}
		values, err := addonValues(ac)
		if err != nil {
			return nil, nil, err
		}
		add(a.name, a.name, isTrue(ac.Enabled, false), values)
	}
	return releases, components, nil
}

func renderRelease(r release, ns string) ([]*unstructured.Unstructured, error) {
	lc, err := loadChart(r.chart)
	if err != nil {
		return nil, err
	}
	relOpts := common.ReleaseOptions{Name: strings.ReplaceAll(r.component, ".", "-"), Namespace: ns, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(lc.chart, r.values, relOpts, common.DefaultCapabilities, false)
	if err != nil {
		return nil, &Error{Component: r.component, Err: err}
	}
	files, err := engine.Engine{}.Render(lc.chart, vals) //nolint:staticcheck // the context variant adds nothing without a client
	if err != nil {
		return nil, &Error{Component: r.component, Err: err}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, name := range names {
		base := name[strings.LastIndex(name, "/")+1:]
		if strings.HasPrefix(base, "_") || strings.HasSuffix(base, ".txt") {
			continue
		}
		objs, err := decodeManifests([]byte(files[name]))
		if err != nil {
			return nil, &Error{Component: r.component, Err: fmt.Errorf("%s: %w", name, err)}
		}
		out = append(out, objs...)
	}
	for _, o := range out {
		if o.GetNamespace() == "" && !clusterScoped[o.GroupVersionKind().GroupKind().String()] {
			o.SetNamespace(ns)
		}
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelComponent] = r.component
		o.SetLabels(labels)
	}
	return append(out, lc.crds...), nil
}

// clusterScoped lists the cluster-scoped kinds the charts may render.
var clusterScoped = map[string]bool{
	"Namespace": true,
	"CustomResourceDefinition.apiextensions.k8s.io":                 true,
	"ClusterRole.rbac.authorization.k8s.io":                         true,
	"ClusterRoleBinding.rbac.authorization.k8s.io":                  true,
	"MutatingWebhookConfiguration.admissionregistration.k8s.io":     true,
	"ValidatingWebhookConfiguration.admissionregistration.k8s.io":   true,
	"ValidatingAdmissionPolicy.admissionregistration.k8s.io":        true,
	"ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io": true,
	"PriorityClass.scheduling.k8s.io":                               true,
}

func userValues(spec *v1alpha1.MeshInstallSpec) (map[string]any, error) {
	if spec.Values == nil || len(spec.Values.Raw) == 0 {
		return map[string]any{}, nil
	}
	m := map[string]any{}
	if err := json.Unmarshal(spec.Values.Raw, &m); err != nil {
		return nil, &Error{Err: fmt.Errorf("spec.values must be an object: %w", err)}
	}
	known := map[string]bool{}
	for _, k := range ValuesKeys {
		known[k] = true
	}
	for k, v := range m {
		if !known[k] {
			return nil, &Error{Err: fmt.Errorf("spec.values.%s: unknown chart; spec.values takes %s", k, strings.Join(ValuesKeys, ", "))}
		}
		if _, ok := v.(map[string]any); !ok && v != nil {
			return nil, &Error{Err: fmt.Errorf("spec.values.%s must be an object", k)}
		}
	}
	return m, nil
}

func meshConfigValues(spec *v1alpha1.MeshInstallSpec, ns, trustDomain string) (map[string]any, error) {
	suffix := ""
	if spec.Revision != "" {
		suffix = "-" + spec.Revision
	}
	defaults := map[string]any{
		"rootNamespace":         ns,
		"trustDomain":           trustDomain,
		"enablePrometheusMerge": true,
		"defaultConfig": map[string]any{
			"discoveryAddress": fmt.Sprintf("istiod%s.%s.svc:15012", suffix, ns),
		},
	}
	if spec.MeshConfig == nil {
		return defaults, nil
	}
	user, err := profile.ToMap(spec.MeshConfig)
	if err != nil {
		return nil, err
	}
	return profile.MergeMaps(defaults, user), nil
}

func proxyDefaults(spec *v1alpha1.MeshInstallSpec) *v1alpha1.ProxyConfig {
	if spec.MeshConfig == nil {
		return nil
	}
	return spec.MeshConfig.DefaultConfig
}

func workloadValues(ws v1alpha1.WorkloadSettings) (map[string]any, error) {
	return profile.ToMap(ws)
}

func addonValues(a v1alpha1.AddonComponent) (map[string]any, error) {
	m, err := profile.ToMap(a)
	if err != nil {
		return nil, err
	}
	delete(m, "enabled")
	return m, nil
}

func gatewayValues(kind string, gw v1alpha1.GatewayComponent) (map[string]any, error) {
	values, err := workloadValues(gw.WorkloadSettings)
	if err != nil {
		return nil, err
	}
	values["name"] = gw.Name
	values["kind"] = kind
	if len(gw.Labels) > 0 {
		values["labels"] = stringMap(gw.Labels)
	}
	if len(gw.Annotations) > 0 {
		values["annotations"] = stringMap(gw.Annotations)
	}
	svc := map[string]any{}
	if kind == "egress" {
		// An egress gateway is reached from inside the cluster only.
		svc["type"] = "ClusterIP"
		svc["ports"] = []any{
			map[string]any{"name": "http2", "port": int64(80), "targetPort": int64(8080), "protocol": "TCP"},
			map[string]any{"name": "https", "port": int64(443), "targetPort": int64(8443), "protocol": "TCP"},
		}
	}
	if s := gw.Service; s != nil {
		if s.Type != "" {
			svc["type"] = string(s.Type)
		}
		if len(s.Annotations) > 0 {
			svc["annotations"] = stringMap(s.Annotations)
		}
		if s.LoadBalancerIP != "" {
			svc["loadBalancerIP"] = s.LoadBalancerIP
		}
		if s.ExternalTrafficPolicy != "" {
			svc["externalTrafficPolicy"] = s.ExternalTrafficPolicy
		}
		if len(s.Ports) > 0 {
			ports := make([]any, 0, len(s.Ports))
			for _, p := range s.Ports {
				port := map[string]any{"name": p.Name, "port": int64(p.Port), "targetPort": int64(defaultTargetPort(p.Port)), "protocol": "TCP"}
				if p.TargetPort != nil {
					port["targetPort"] = int64(*p.TargetPort)
				}
				if p.NodePort != nil {
					port["nodePort"] = int64(*p.NodePort)
				}
				if p.Protocol != "" {
					port["protocol"] = string(p.Protocol)
				}
				ports = append(ports, port)
			}
			svc["ports"] = ports
		}
	}
	if len(svc) > 0 {
		values["service"] = svc
	}
	return values, nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func stringMap(in map[string]string) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

func isTrue(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// ImageRef is the mesh image the options select.
func ImageRef(o Options) string { return o.Hub + "/" + o.Image + ":" + o.Version }

// defaultTargetPort is the gateway pod's port for a Service port that names
// none. Gateways run unprivileged and bind no port below 1024, so privileged
// ports map as Istio's do: 80 to 8080, 443 to 8443.
func defaultTargetPort(port int32) int32 {
	if port < 1024 {
		return port + 8000
	}
	return port
}
