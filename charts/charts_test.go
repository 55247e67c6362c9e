package charts_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/charts"
)

const meshNamespace = "istio-system"

// workloadCharts accept the common workload values (autoscaling, PDB, ...).
var workloadCharts = []string{"controlplane", "injector", "gateway"}

// addonCharts accept the add-on values.
var addonCharts = []string{"prometheus", "grafana", "jaeger", "kiali"}

// loadChart loads a chart the way the operator does: walk the embedded
// folder into buffered files and hand them to Helm's v2 loader.
func loadChart(t *testing.T, name string) *chartv2.Chart {
	t.Helper()
	sub, err := fs.Sub(charts.FS, name)
	if err != nil {
		t.Fatal(err)
	}
	var files []*archive.BufferedFile
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		files = append(files, &archive.BufferedFile{Name: p, Data: data})
		return err
	})
	if err != nil {
		t.Fatalf("walking chart %s: %v", name, err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		t.Fatalf("loading chart %s: %v", name, err)
	}
	return c
}

// renderChart renders a chart with Helm's engine after schema validation.
func renderChart(t *testing.T, name string, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	c := loadChart(t, name)
	rv, err := util.ToRenderValuesWithSchemaValidation(c, vals,
		common.ReleaseOptions{Name: name, Namespace: meshNamespace, IsInstall: true},
		common.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(c, rv)
	if err != nil {
		return nil, err
	}
	files := make([]string, 0, len(out))
	for f := range out {
		files = append(files, f)
	}
	sort.Strings(files)

	var objs []*unstructured.Unstructured
	for _, f := range files {
		if strings.HasPrefix(path.Base(f), "_") {
			if strings.TrimSpace(out[f]) != "" {
				t.Errorf("%s: helper file rendered output", f)
			}
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out[f])))
		for i := 0; ; i++ {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: splitting documents: %v", f, err)
			}
			if isBlank(raw) {
				continue
			}
			j, err := yaml.YAMLToJSON(raw)
			if err != nil {
				t.Fatalf("%s document %d does not parse: %v\n%s", f, i, err, raw)
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(j); err != nil {
				t.Fatalf("%s document %d is not a Kubernetes object: %v\n%s", f, i, err, raw)
			}
			if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
				t.Fatalf("%s document %d lacks apiVersion, kind or metadata.name:\n%s", f, i, raw)
			}
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// mustRender renders and fails the test on any error.
func mustRender(t *testing.T, name string, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	objs, err := renderChart(t, name, vals)
	if err != nil {
		t.Fatalf("rendering %s: %v", name, err)
	}
	return objs
}

// isBlank reports whether a YAML document holds only comments and spaces.
func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// vals parses a YAML snippet into chart values.
func vals(t *testing.T, s string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test values: %v", err)
	}
	return m
}

// typed converts an object into its Go type, rejecting unknown fields, so a
// misspelt field in a template fails here rather than in the cluster.
func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func mustFind(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		var have []string
		for _, o := range objs {
			have = append(have, o.GetKind()+"/"+o.GetName())
		}
		t.Fatalf("no %s %q rendered; have %v", kind, name, have)
	}
	return o
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

var clusterScoped = map[string]bool{
	"ClusterRole":                    true,
	"ClusterRoleBinding":             true,
	"MutatingWebhookConfiguration":   true,
	"ValidatingWebhookConfiguration": true,
	"CustomResourceDefinition":       true,
}

// checkCommon runs the checks every rendered chart must pass.
func checkCommon(t *testing.T, chart string, objs []*unstructured.Unstructured, autoscaling, pdb bool) {
	t.Helper()
	if len(objs) == 0 {
		t.Fatalf("%s rendered no objects", chart)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		key := o.GetKind() + "/" + o.GetName()
		if seen[key] {
			t.Errorf("%s: %s rendered twice", chart, key)
		}
		seen[key] = true

		if clusterScoped[o.GetKind()] {
			if o.GetNamespace() != "" {
				t.Errorf("%s: cluster-scoped %s has a namespace", chart, key)
			}
			if !strings.HasSuffix(o.GetName(), "-"+meshNamespace) {
				t.Errorf("%s: cluster-scoped %s does not carry the mesh namespace in its name", chart, key)
			}
		} else if o.GetNamespace() != meshNamespace {
			t.Errorf("%s: %s is in namespace %q, want %q", chart, key, o.GetNamespace(), meshNamespace)
		}

		// Every built-in kind must convert strictly to its Go type.
		gvk := o.GroupVersionKind()
		obj, err := scheme.Scheme.New(gvk)
		if err != nil {
			t.Errorf("%s: %s has unknown type %s: %v", chart, key, gvk, err)
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, obj, true); err != nil {
			t.Errorf("%s: %s does not match its schema: %v", chart, key, err)
		}
	}

	deployments := ofKind(objs, "Deployment")
	if len(deployments) == 0 {
		return
	}
	for _, u := range deployments {
		checkDeployment(t, chart, typed[appsv1.Deployment](t, u), autoscaling)
	}

	hpas := ofKind(objs, "HorizontalPodAutoscaler")
	if autoscaling != (len(hpas) > 0) {
		t.Errorf("%s: autoscaling=%v but %d HorizontalPodAutoscalers rendered", chart, autoscaling, len(hpas))
	}
	for _, u := range hpas {
		hpa := typed[autoscalingv2.HorizontalPodAutoscaler](t, u)
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || find(objs, "Deployment", ref.Name) == nil {
			t.Errorf("%s: HPA %s targets %s %s, which is not rendered", chart, hpa.Name, ref.Kind, ref.Name)
		}
	}

	pdbs := ofKind(objs, "PodDisruptionBudget")
	if pdb != (len(pdbs) > 0) {
		t.Errorf("%s: podDisruptionBudget=%v but %d PodDisruptionBudgets rendered", chart, pdb, len(pdbs))
	}
	for _, u := range pdbs {
		p := typed[policyv1.PodDisruptionBudget](t, u)
		if p.Spec.MinAvailable == nil || p.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("%s: PDB %s minAvailable = %v, want 1", chart, p.Name, p.Spec.MinAvailable)
		}
		if !selectsPods(t, p.Spec.Selector, deployments) {
			t.Errorf("%s: PDB %s selector %v selects no rendered pods", chart, p.Name, p.Spec.Selector)
		}
	}

	for _, u := range ofKind(objs, "Service") {
		checkServiceTargets(t, chart, typed[corev1.Service](t, u), deployments)
	}
}

func checkDeployment(t *testing.T, chart string, d *appsv1.Deployment, autoscaling bool) {
	t.Helper()
	where := chart + ": Deployment " + d.Name
	if autoscaling && d.Spec.Replicas != nil {
		t.Errorf("%s: sets spec.replicas although an HPA owns it", where)
	}
	if !autoscaling && d.Spec.Replicas == nil {
		t.Errorf("%s: spec.replicas missing", where)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not match its pod labels %v", where, d.Spec.Selector, d.Spec.Template.Labels)
	}

	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	switch {
	case psc == nil:
		t.Errorf("%s: no pod securityContext", where)
	default:
		if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("%s: pod runAsNonRoot is not true", where)
		}
		if psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.RunAsGroup == nil || *psc.RunAsGroup == 0 || psc.FSGroup == nil {
			t.Errorf("%s: pod runAsUser/runAsGroup/fsGroup must be fixed and non-root", where)
		}
		if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccompProfile is not RuntimeDefault", where)
		}
	}
	if pod.AutomountServiceAccountToken == nil {
		t.Errorf("%s: automountServiceAccountToken must be set explicitly", where)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s: uses host namespaces", where)
	}

	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = true
	}
	containers := append(slices.Clone(pod.InitContainers), pod.Containers...)
	for _, c := range containers {
		cw := where + " container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s: no securityContext", cw)
			continue
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", cw)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", cw)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", cw)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities must drop ALL and add none", cw)
		}
		if len(c.Resources.Requests) == 0 {
			t.Errorf("%s: no resource requests", cw)
		}
		if c.ReadinessProbe == nil {
			t.Errorf("%s: no readinessProbe", cw)
		}
		if c.Image == "" || strings.Contains(c.Image, "<no value>") {
			t.Errorf("%s: bad image %q", cw, c.Image)
		}
		for _, p := range c.Ports {
			if p.ContainerPort <= 1024 {
				t.Errorf("%s: binds privileged port %d", cw, p.ContainerPort)
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s: mounts undefined volume %q", cw, m.Name)
			}
		}
		for _, e := range c.Env {
			if strings.Contains(e.Value, "<no value>") {
				t.Errorf("%s: env %s = %q", cw, e.Name, e.Value)
			}
		}
	}
}

// checkServiceTargets verifies that a Service selects rendered pods and that
// each targetPort is a port one of those pods' containers declares.
func checkServiceTargets(t *testing.T, chart string, svc *corev1.Service, deployments []*unstructured.Unstructured) {
	t.Helper()
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var ports []int32
	matched := false
	for _, u := range deployments {
		d := typed[appsv1.Deployment](t, u)
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		matched = true
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports = append(ports, p.ContainerPort)
			}
		}
	}
	if len(svc.Spec.Selector) == 0 || !matched {
		t.Errorf("%s: Service %s selector %v matches no rendered pods", chart, svc.Name, svc.Spec.Selector)
		return
	}
	for _, p := range svc.Spec.Ports {
		if !slices.Contains(ports, int32(p.TargetPort.IntValue())) {
			t.Errorf("%s: Service %s port %s targets %s, which no selected container declares", chart, svc.Name, p.Name, p.TargetPort.String())
		}
	}
}

func selectsPods(t *testing.T, s *metav1.LabelSelector, deployments []*unstructured.Unstructured) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil || sel.Empty() {
		return false
	}
	for _, u := range deployments {
		if sel.Matches(labels.Set(typed[appsv1.Deployment](t, u).Spec.Template.Labels)) {
			return true
		}
	}
	return false
}

func TestChartsAreEmbedded(t *testing.T) {
	entries, err := fs.ReadDir(charts.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	want := slices.Clone(charts.Names)
	sort.Strings(want)
	if !reflect.DeepEqual(dirs, want) {
		t.Fatalf("embedded chart folders %v, Names %v", dirs, charts.Names)
	}
	for _, name := range charts.Names {
		c := loadChart(t, name)
		if c.Metadata.APIVersion != chartv2.APIVersionV2 || c.Metadata.Name != name ||
			c.Metadata.Version != "0.1.0" || c.Metadata.AppVersion != "0.1.0" {
			t.Errorf("%s: Chart.yaml = %+v", name, c.Metadata)
		}
		if len(c.Schema) == 0 {
			t.Errorf("%s: no values.schema.json", name)
		}
		if !slices.ContainsFunc(c.Templates, func(f *common.File) bool { return f.Name == "templates/_helpers.tpl" }) {
			t.Errorf("%s: templates/_helpers.tpl is not embedded", name)
		}
		for _, f := range c.Templates {
			if strings.Contains(strings.ToUpper(f.Name), "NOTES") {
				t.Errorf("%s: has %s", name, f.Name)
			}
			if bytes.Contains(f.Data, []byte("lookup")) || bytes.Contains(f.Data, []byte("helm.sh/hook")) {
				t.Errorf("%s: %s uses lookup or hooks", name, f.Name)
			}
		}
		// charts.Load is the same walk.
		lc, err := charts.Load(name)
		if err != nil {
			t.Fatalf("charts.Load(%s): %v", name, err)
		}
		if len(lc.Templates) != len(c.Templates) || len(lc.Files) != len(c.Files) {
			t.Errorf("charts.Load(%s) loaded a different chart", name)
		}
		g, ok := c.Values["global"].(map[string]any)
		if !ok {
			t.Errorf("%s: values.yaml has no global block", name)
			continue
		}
		for _, k := range []string{"hub", "image", "tag", "imagePullPolicy", "imagePullSecrets", "revision", "trustDomain"} {
			if _, ok := g[k]; !ok {
				t.Errorf("%s: values.yaml lacks global.%s", name, k)
			}
		}
	}
	if _, err := charts.Load("nope"); err == nil {
		t.Error("charts.Load of an unknown chart succeeded")
	}
}

// TestRenderDefaults renders every chart with its defaults (scenario a).
func TestRenderDefaults(t *testing.T) {
	for _, name := range charts.Names {
		t.Run(name, func(t *testing.T) {
			objs, err := renderChart(t, name, nil)
			if err != nil {
				t.Fatal(err)
			}
			if name == "base" {
				if len(objs) != 0 {
					t.Fatalf("base rendered %d objects; its CRDs live in crds/", len(objs))
				}
				return
			}
			checkCommon(t, name, objs, false, false)
		})
	}
}

// TestRenderCanaryAutoscaled renders with revision canary, autoscaling and
// PDBs on (scenario b).
func TestRenderCanaryAutoscaled(t *testing.T) {
	for _, name := range workloadCharts {
		t.Run(name, func(t *testing.T) {
			objs := mustRender(t, name, vals(t, `
global: {revision: canary}
autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 7, targetCPUUtilizationPercentage: 60}
podDisruptionBudget: {enabled: true}
`))
			checkCommon(t, name, objs, true, true)
			hpa := typed[autoscalingv2.HorizontalPodAutoscaler](t, ofKind(objs, "HorizontalPodAutoscaler")[0])
			if *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 7 ||
				len(hpa.Spec.Metrics) != 1 || *hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != 60 {
				t.Errorf("HPA spec = %+v", hpa.Spec)
			}
		})
	}
	for _, name := range addonCharts {
		t.Run(name, func(t *testing.T) {
			checkCommon(t, name, mustRender(t, name, vals(t, `global: {revision: canary}`)), false, false)
		})
	}
}

func revLabel(u *unstructured.Unstructured) string {
	return u.GetLabels()["istio.io/rev"]
}

func TestRevisionNaming(t *testing.T) {
	for _, tc := range []struct {
		revision, suffix, label string
	}{
		{"", "", "default"},
		{"canary", "-canary", "canary"},
	} {
		t.Run("revision="+tc.label, func(t *testing.T) {
			v := vals(t, fmt.Sprintf("global: {revision: %q}", tc.revision))

			cp := mustRender(t, "controlplane", v)
			for _, ref := range [][2]string{
				{"ServiceAccount", "istiod" + tc.suffix},
				{"Deployment", "istiod" + tc.suffix},
				{"Service", "istiod" + tc.suffix},
				{"ConfigMap", "istio" + tc.suffix},
				{"Role", "istiod" + tc.suffix},
				{"RoleBinding", "istiod" + tc.suffix},
				{"ClusterRole", "istiod-clusterrole" + tc.suffix + "-" + meshNamespace},
				{"ClusterRoleBinding", "istiod-clusterrole" + tc.suffix + "-" + meshNamespace},
			} {
				o := mustFind(t, cp, ref[0], ref[1])
				if got := revLabel(o); got != tc.label {
					t.Errorf("%s %s istio.io/rev = %q, want %q", ref[0], ref[1], got, tc.label)
				}
			}
			d := typed[appsv1.Deployment](t, mustFind(t, cp, "Deployment", "istiod"+tc.suffix))
			pl := d.Spec.Template.Labels
			if pl["app"] != "istiod" || pl["istio"] != "pilot" || pl["istio.io/rev"] != tc.label || pl["sidecar.istio.io/inject"] != "false" {
				t.Errorf("istiod pod labels = %v", pl)
			}
			c := d.Spec.Template.Spec.Containers[0]
			if c.Name != "discovery" || !reflect.DeepEqual(c.Command, []string{"/usr/local/bin/pilot"}) ||
				!reflect.DeepEqual(c.Args, []string{"discovery", "--meshConfig=/etc/istio/config/mesh", "--revision=" + tc.label}) {
				t.Errorf("istiod container command %v args %v", c.Command, c.Args)
			}
			if env := envValue(c.Env, "REVISION"); env != tc.label {
				t.Errorf("istiod REVISION = %q", env)
			}
			svc := typed[corev1.Service](t, mustFind(t, cp, "Service", "istiod"+tc.suffix))
			if !reflect.DeepEqual(svc.Spec.Selector, map[string]string{"app": "istiod", "istio.io/rev": tc.label}) {
				t.Errorf("istiod Service selector = %v", svc.Spec.Selector)
			}
			crb := typed[rbacv1.ClusterRoleBinding](t, mustFind(t, cp, "ClusterRoleBinding", "istiod-clusterrole"+tc.suffix+"-"+meshNamespace))
			if crb.RoleRef.Name != crb.Name || crb.Subjects[0].Name != "istiod"+tc.suffix || crb.Subjects[0].Namespace != meshNamespace {
				t.Errorf("istiod ClusterRoleBinding = %+v", crb)
			}

			inj := mustRender(t, "injector", v)
			for _, ref := range [][2]string{
				{"ServiceAccount", "istio-sidecar-injector" + tc.suffix},
				{"Deployment", "istio-sidecar-injector" + tc.suffix},
				{"Service", "istio-sidecar-injector" + tc.suffix},
				{"ConfigMap", "istio-sidecar-injector" + tc.suffix},
				{"Role", "istio-sidecar-injector" + tc.suffix},
				{"MutatingWebhookConfiguration", "istio-sidecar-injector" + tc.suffix + "-" + meshNamespace},
				{"ClusterRole", "istio-sidecar-injector" + tc.suffix + "-" + meshNamespace},
			} {
				o := mustFind(t, inj, ref[0], ref[1])
				if got := revLabel(o); got != tc.label {
					t.Errorf("%s %s istio.io/rev = %q, want %q", ref[0], ref[1], got, tc.label)
				}
			}
			id := typed[appsv1.Deployment](t, mustFind(t, inj, "Deployment", "istio-sidecar-injector"+tc.suffix))
			if id.Spec.Template.Labels["app"] != "sidecar-injector" || id.Spec.Template.Labels["istio.io/rev"] != tc.label {
				t.Errorf("injector pod labels = %v", id.Spec.Template.Labels)
			}
			if !reflect.DeepEqual(id.Spec.Template.Spec.Containers[0].Command, []string{"/usr/local/bin/injector"}) {
				t.Errorf("injector command = %v", id.Spec.Template.Spec.Containers[0].Command)
			}

			gw := mustRender(t, "gateway", v)
			gd := typed[appsv1.Deployment](t, mustFind(t, gw, "Deployment", "istio-ingressgateway"))
			if gd.Spec.Template.Labels["istio.io/rev"] != tc.label {
				t.Errorf("gateway pod istio.io/rev = %q", gd.Spec.Template.Labels["istio.io/rev"])
			}
			if got, want := envValue(gd.Spec.Template.Spec.Containers[0].Env, "DISCOVERY_ADDRESS"), "istiod"+tc.suffix+"."+meshNamespace+".svc:15012"; got != want {
				t.Errorf("gateway DISCOVERY_ADDRESS = %q, want %q", got, want)
			}
		})
	}
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestControlPlane(t *testing.T) {
	objs := mustRender(t, "controlplane", vals(t, `
env: {PILOT_TRACE_SAMPLING: "1.5", EXTRA_FLAG: true}
meshConfig:
  accessLogFile: /dev/stdout
  trustDomain: example.org
  defaultConfig: {holdApplicationUntilProxyStarts: true}
`))
	cm := typed[corev1.ConfigMap](t, mustFind(t, objs, "ConfigMap", "istio"))
	var mesh map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["mesh"]), &mesh); err != nil {
		t.Fatalf("mesh key does not parse: %v", err)
	}
	want := map[string]any{
		"accessLogFile": "/dev/stdout",
		"trustDomain":   "example.org", // the user's value wins
		"rootNamespace": meshNamespace,
		"defaultConfig": map[string]any{
			"holdApplicationUntilProxyStarts": true,
			"discoveryAddress":                "istiod." + meshNamespace + ".svc:15012",
		},
	}
	if !reflect.DeepEqual(mesh, want) {
		t.Errorf("mesh = %v, want %v", mesh, want)
	}
	if cm.Data["meshNetworks"] != "networks: {}" {
		t.Errorf("meshNetworks = %q", cm.Data["meshNetworks"])
	}

	d := typed[appsv1.Deployment](t, mustFind(t, objs, "Deployment", "istiod"))
	c := d.Spec.Template.Spec.Containers[0]
	if envValue(c.Env, "PILOT_TRACE_SAMPLING") != "1.5" || envValue(c.Env, "EXTRA_FLAG") != "true" {
		t.Errorf("extra env not rendered: %v", c.Env)
	}
	for _, name := range []string{"POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil }) {
			t.Errorf("env %s is not from the downward API", name)
		}
	}
	wantPorts := map[string]int32{"http-ready": 8080, "tls-xds": 15012, "https-webhook": 15017, "http-monitoring": 15014}
	for _, p := range c.Ports {
		if wantPorts[p.Name] != p.ContainerPort {
			t.Errorf("unexpected container port %s %d", p.Name, p.ContainerPort)
		}
		delete(wantPorts, p.Name)
	}
	if len(wantPorts) > 0 {
		t.Errorf("missing container ports %v", wantPorts)
	}
	if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != "/ready" || p.Port.IntValue() != 8080 {
		t.Errorf("readinessProbe = %+v", c.ReadinessProbe)
	}
	if *d.Spec.Template.Spec.AutomountServiceAccountToken != true {
		t.Error("istiod needs its API token")
	}
	checkMount(t, d, "/etc/istio/config", func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == "istio" })
	checkMount(t, d, "/tmp", func(v corev1.Volume) bool { return v.EmptyDir != nil })
	checkMount(t, d, "/var/run/secrets/tokens", isIstioCAToken)

	svc := typed[corev1.Service](t, mustFind(t, objs, "Service", "istiod"))
	checkServicePorts(t, svc, map[string][2]int{
		"https-dns": {15012, 15012}, "https-webhook": {443, 15017}, "http-monitoring": {15014, 15014},
	})

	cr := typed[rbacv1.ClusterRole](t, mustFind(t, objs, "ClusterRole", "istiod-clusterrole-"+meshNamespace))
	for _, need := range []struct{ group, resource, verb string }{
		{"", "services", "watch"}, {"", "endpoints", "list"}, {"", "pods", "get"}, {"", "namespaces", "watch"},
		{"", "nodes", "list"}, {"", "secrets", "watch"}, {"", "configmaps", "create"}, {"", "configmaps", "update"},
		{"", "configmaps", "patch"}, {"discovery.k8s.io", "endpointslices", "watch"},
		{"networking.istio.io", "*", "watch"}, {"security.istio.io", "*", "list"}, {"telemetry.istio.io", "*", "get"},
		{"networking.istio.io", "*/status", "patch"}, {"telemetry.istio.io", "*/status", "update"},
		{"authentication.k8s.io", "tokenreviews", "create"}, {"authorization.k8s.io", "subjectaccessreviews", "create"},
		{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch"},
		{"", "events", "create"}, {"events.k8s.io", "events", "patch"},
	} {
		if !allows(cr.Rules, need.group, need.resource, need.verb) {
			t.Errorf("istiod ClusterRole does not allow %s %s/%s", need.verb, need.group, need.resource)
		}
	}
	if allows(cr.Rules, "", "secrets", "delete") {
		t.Error("istiod ClusterRole may delete secrets cluster-wide")
	}
	role := typed[rbacv1.Role](t, mustFind(t, objs, "Role", "istiod"))
	for _, verb := range []string{"create", "update", "patch", "delete"} {
		if !allows(role.Rules, "", "secrets", verb) {
			t.Errorf("istiod Role does not allow %s secrets", verb)
		}
	}
	for _, verb := range []string{"get", "list", "watch", "create", "update", "patch", "delete"} {
		if !allows(role.Rules, "coordination.k8s.io", "leases", verb) {
			t.Errorf("istiod Role does not allow %s leases", verb)
		}
	}
}

func isIstioCAToken(v corev1.Volume) bool {
	if v.Projected == nil || len(v.Projected.Sources) != 1 {
		return false
	}
	s := v.Projected.Sources[0].ServiceAccountToken
	return s != nil && s.Audience == "istio-ca"
}

// checkMount asserts that the first container mounts path from a volume
// accepted by ok.
func checkMount(t *testing.T, d *appsv1.Deployment, mountPath string, ok func(corev1.Volume) bool) {
	t.Helper()
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.MountPath != mountPath {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name {
				if !ok(v) {
					t.Errorf("%s: %s is mounted from an unexpected volume %+v", d.Name, mountPath, v.VolumeSource)
				}
				return
			}
		}
	}
	t.Errorf("%s: nothing mounted at %s", d.Name, mountPath)
}

// allows reports whether rules grant verb on group/resource.
func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// checkServicePorts compares a Service's ports with name -> {port, targetPort}.
func checkServicePorts(t *testing.T, svc *corev1.Service, want map[string][2]int) {
	t.Helper()
	got := map[string][2]int{}
	for _, p := range svc.Spec.Ports {
		got[p.Name] = [2]int{int(p.Port), p.TargetPort.IntValue()}
		if p.Protocol != corev1.ProtocolTCP {
			t.Errorf("Service %s port %s protocol %s", svc.Name, p.Name, p.Protocol)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Service %s ports = %v, want %v", svc.Name, got, want)
	}
}

func TestInjector(t *testing.T) {
	objs := mustRender(t, "injector", vals(t, `
meshConfig: {accessLogFile: /dev/stdout}
sidecar: {logLevel: debug}
`))
	cm := typed[corev1.ConfigMap](t, mustFind(t, objs, "ConfigMap", "istio-sidecar-injector"))
	var config map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config"]), &config); err != nil {
		t.Fatalf("config key does not parse: %v", err)
	}
	wantConfig := map[string]any{
		"policy": "enabled", "neverInjectSelector": []any{}, "alwaysInjectSelector": []any{}, "defaultTemplates": []any{"sidecar"},
	}
	if !reflect.DeepEqual(config, wantConfig) {
		t.Errorf("config = %v", config)
	}
	var values struct {
		Global     map[string]any `json:"global"`
		Sidecar    map[string]any `json:"sidecar"`
		MeshConfig map[string]any `json:"meshConfig"`
	}
	dec := json.NewDecoder(strings.NewReader(cm.Data["values"]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&values); err != nil {
		t.Fatalf("values key is not the expected JSON: %v", err)
	}
	if values.Global["hub"] != "ghcr.io/mizzen-mesh" || values.Sidecar["logLevel"] != "debug" ||
		values.Sidecar["nativeSidecar"] != "auto" || values.Sidecar["holdApplicationUntilProxyStarts"] != false ||
		values.MeshConfig["accessLogFile"] != "/dev/stdout" || values.MeshConfig["trustDomain"] != "cluster.local" {
		t.Errorf("values = %+v", values)
	}
	if r, _ := values.Sidecar["resources"].(map[string]any); r["limits"].(map[string]any)["memory"] != "1Gi" {
		t.Errorf("sidecar resources = %v", values.Sidecar["resources"])
	}

	svc := typed[corev1.Service](t, mustFind(t, objs, "Service", "istio-sidecar-injector"))
	if p := svc.Spec.Ports[0]; p.Port != 443 || p.TargetPort.IntValue() != 9443 {
		t.Errorf("injector Service port = %+v", p)
	}
	d := typed[appsv1.Deployment](t, mustFind(t, objs, "Deployment", "istio-sidecar-injector"))
	c := d.Spec.Template.Spec.Containers[0]
	if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != "/ready" || p.Port.IntValue() != 15014 ||
		!slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == 15014 }) {
		t.Errorf("injector readinessProbe %+v does not use its monitoring port", c.ReadinessProbe)
	}
	checkMount(t, d, "/etc/istio/inject", func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == "istio-sidecar-injector"
	})

	cr := typed[rbacv1.ClusterRole](t, mustFind(t, objs, "ClusterRole", "istio-sidecar-injector-"+meshNamespace))
	for _, verb := range []string{"get", "list", "watch", "update", "patch"} {
		if !allows(cr.Rules, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", verb) {
			t.Errorf("injector ClusterRole does not allow %s mutatingwebhookconfigurations", verb)
		}
	}
	role := typed[rbacv1.Role](t, mustFind(t, objs, "Role", "istio-sidecar-injector"))
	for _, verb := range []string{"get", "create", "update"} {
		if !allows(role.Rules, "", "secrets", verb) {
			t.Errorf("injector Role does not allow %s secrets", verb)
		}
	}
}

func req(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func TestInjectorWebhookSelectors(t *testing.T) {
	excluded := func(extra ...string) metav1.LabelSelectorRequirement {
		return req("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, append([]string{"kube-system", meshNamespace}, extra...)...)
	}
	type sel struct {
		ns, obj []metav1.LabelSelectorRequirement
	}
	for _, tc := range []struct {
		name   string
		values string
		mwc    string
		want   map[string]sel
	}{
		{
			name: "default revision",
			mwc:  "istio-sidecar-injector-" + meshNamespace,
			want: map[string]sel{
				"namespace.sidecar-injector.istio.io": {
					ns: []metav1.LabelSelectorRequirement{
						req("istio-injection", metav1.LabelSelectorOpIn, "enabled"),
						excluded(),
					},
					obj: []metav1.LabelSelectorRequirement{
						req("sidecar.istio.io/inject", metav1.LabelSelectorOpNotIn, "false"),
					},
				},
				"object.sidecar-injector.istio.io": {
					ns: []metav1.LabelSelectorRequirement{
						req("istio-injection", metav1.LabelSelectorOpDoesNotExist),
						req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist),
						excluded(),
					},
					obj: []metav1.LabelSelectorRequirement{
						req("sidecar.istio.io/inject", metav1.LabelSelectorOpIn, "true"),
						req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist),
					},
				},
			},
		},
		{
			name:   "revision canary with excluded namespaces",
			values: "global: {revision: canary}\nsidecar: {excludeNamespaces: [legacy, kube-system]}\nwebhook: {failurePolicy: Ignore, timeoutSeconds: 5}",
			mwc:    "istio-sidecar-injector-canary-" + meshNamespace,
			want: map[string]sel{
				"rev.namespace.sidecar-injector.istio.io": {
					ns: []metav1.LabelSelectorRequirement{
						req("istio.io/rev", metav1.LabelSelectorOpIn, "canary"),
						req("istio-injection", metav1.LabelSelectorOpDoesNotExist),
						excluded("legacy"),
					},
					obj: []metav1.LabelSelectorRequirement{
						req("sidecar.istio.io/inject", metav1.LabelSelectorOpNotIn, "false"),
					},
				},
				"rev.object.sidecar-injector.istio.io": {
					ns: []metav1.LabelSelectorRequirement{
						req("istio-injection", metav1.LabelSelectorOpDoesNotExist),
						req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist),
						excluded("legacy"),
					},
					obj: []metav1.LabelSelectorRequirement{
						req("sidecar.istio.io/inject", metav1.LabelSelectorOpNotIn, "false"),
						req("istio.io/rev", metav1.LabelSelectorOpIn, "canary"),
					},
				},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := mustRender(t, "injector", vals(t, tc.values))
			if n := len(ofKind(objs, "MutatingWebhookConfiguration")); n != 1 {
				t.Fatalf("%d MutatingWebhookConfigurations rendered", n)
			}
			mwc := typed[admissionv1.MutatingWebhookConfiguration](t, mustFind(t, objs, "MutatingWebhookConfiguration", tc.mwc))
			svcName := strings.TrimSuffix(tc.mwc, "-"+meshNamespace)
			mustFind(t, objs, "Service", svcName)
			if len(mwc.Webhooks) != len(tc.want) {
				t.Fatalf("%d webhooks, want %d", len(mwc.Webhooks), len(tc.want))
			}
			for _, wh := range mwc.Webhooks {
				want, ok := tc.want[wh.Name]
				if !ok {
					t.Errorf("unexpected webhook %s", wh.Name)
					continue
				}
				if wh.NamespaceSelector == nil || len(wh.NamespaceSelector.MatchLabels) > 0 ||
					!reflect.DeepEqual(wh.NamespaceSelector.MatchExpressions, want.ns) {
					t.Errorf("%s namespaceSelector = %+v\nwant %+v", wh.Name, wh.NamespaceSelector, want.ns)
				}
				if wh.ObjectSelector == nil || len(wh.ObjectSelector.MatchLabels) > 0 ||
					!reflect.DeepEqual(wh.ObjectSelector.MatchExpressions, want.obj) {
					t.Errorf("%s objectSelector = %+v\nwant %+v", wh.Name, wh.ObjectSelector, want.obj)
				}
				cc := wh.ClientConfig
				if len(cc.CABundle) != 0 || cc.URL != nil || cc.Service == nil || cc.Service.Name != svcName ||
					cc.Service.Namespace != meshNamespace || *cc.Service.Path != "/inject" || *cc.Service.Port != 443 {
					t.Errorf("%s clientConfig = %+v", wh.Name, cc)
				}
				if *wh.SideEffects != admissionv1.SideEffectClassNone || !reflect.DeepEqual(wh.AdmissionReviewVersions, []string{"v1"}) ||
					*wh.ReinvocationPolicy != admissionv1.NeverReinvocationPolicy {
					t.Errorf("%s: sideEffects/admissionReviewVersions/reinvocationPolicy wrong", wh.Name)
				}
				wantRules := []admissionv1.RuleWithOperations{{
					Operations: []admissionv1.OperationType{admissionv1.Create},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}}
				if !reflect.DeepEqual(wh.Rules, wantRules) {
					t.Errorf("%s rules = %+v", wh.Name, wh.Rules)
				}
				wantPolicy, wantTimeout := admissionv1.Fail, int32(10)
				if tc.values != "" {
					wantPolicy, wantTimeout = admissionv1.Ignore, 5
				}
				if *wh.FailurePolicy != wantPolicy || *wh.TimeoutSeconds != wantTimeout {
					t.Errorf("%s failurePolicy %s timeout %d", wh.Name, *wh.FailurePolicy, *wh.TimeoutSeconds)
				}
			}
		})
	}
}

func TestGateway(t *testing.T) {
	t.Run("ingress defaults", func(t *testing.T) {
		objs := mustRender(t, "gateway", nil)
		d := typed[appsv1.Deployment](t, mustFind(t, objs, "Deployment", "istio-ingressgateway"))
		wantLabels := map[string]string{
			"app": "istio-ingressgateway", "istio": "ingressgateway", "sidecar.istio.io/inject": "false",
			"service.istio.io/canonical-name": "istio-ingressgateway", "istio.io/rev": "default",
		}
		if !reflect.DeepEqual(d.Spec.Template.Labels, wantLabels) {
			t.Errorf("pod labels = %v, want %v", d.Spec.Template.Labels, wantLabels)
		}
		for k, v := range map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15090", "prometheus.io/path": "/stats/prometheus"} {
			if d.Spec.Template.Annotations[k] != v {
				t.Errorf("pod annotation %s = %q", k, d.Spec.Template.Annotations[k])
			}
		}
		pod := d.Spec.Template.Spec
		if pod.ServiceAccountName != "istio-ingressgateway-service-account" || *pod.AutomountServiceAccountToken {
			t.Errorf("serviceAccount %s automount %v", pod.ServiceAccountName, *pod.AutomountServiceAccountToken)
		}
		mustFind(t, objs, "ServiceAccount", "istio-ingressgateway-service-account")
		c := pod.Containers[0]
		if c.Name != "istio-proxy" || !reflect.DeepEqual(c.Command, []string{"/usr/local/bin/proxy"}) ||
			!reflect.DeepEqual(c.Args, []string{"router", "--gateway-name=istio-ingressgateway"}) {
			t.Errorf("container %s command %v args %v", c.Name, c.Command, c.Args)
		}
		if c.Image != "ghcr.io/mizzen-mesh/mizzen:0.1.0" {
			t.Errorf("image = %s", c.Image)
		}
		var ports []string
		for _, p := range c.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d", p.Name, p.ContainerPort))
		}
		if want := []string{"status-port:15021", "http2:8080", "https:8443", "http-envoy-prom:15090"}; !reflect.DeepEqual(ports, want) {
			t.Errorf("container ports = %v, want %v", ports, want)
		}
		if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != "/healthz/ready" || p.Port.IntValue() != 15021 {
			t.Errorf("readinessProbe = %+v", c.ReadinessProbe)
		}
		checkMount(t, d, "/var/run/secrets/tokens", isIstioCAToken)
		checkMount(t, d, "/var/run/secrets/istio", func(v corev1.Volume) bool {
			return v.ConfigMap != nil && v.ConfigMap.Name == "istio-ca-root-cert" && v.ConfigMap.Optional != nil && *v.ConfigMap.Optional
		})
		checkMount(t, d, "/etc/istio/pod", func(v corev1.Volume) bool {
			if v.DownwardAPI == nil {
				return false
			}
			var fields []string
			for _, i := range v.DownwardAPI.Items {
				fields = append(fields, i.Path+"="+i.FieldRef.FieldPath)
			}
			return reflect.DeepEqual(fields, []string{"labels=metadata.labels", "annotations=metadata.annotations"})
		})
		checkMount(t, d, "/var/run/secrets/workload-spiffe-credentials", func(v corev1.Volume) bool { return v.EmptyDir != nil })
		checkMount(t, d, "/tmp", func(v corev1.Volume) bool { return v.EmptyDir != nil })

		svc := typed[corev1.Service](t, mustFind(t, objs, "Service", "istio-ingressgateway"))
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.LoadBalancerIP != "" || svc.Spec.ExternalTrafficPolicy != "" {
			t.Errorf("Service spec = %+v", svc.Spec)
		}
		checkServicePorts(t, svc, map[string][2]int{"status-port": {15021, 15021}, "http2": {80, 8080}, "https": {443, 8443}})
		if !reflect.DeepEqual(svc.Spec.Selector, map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"}) {
			t.Errorf("Service selector = %v", svc.Spec.Selector)
		}
	})

	// Scenario c: an egress gateway with its own Service type, ports and labels.
	t.Run("egress custom", func(t *testing.T) {
		objs := mustRender(t, "gateway", vals(t, `
name: istio-egressgateway
kind: egress
labels: {team: edge, istio: egressgateway}
annotations: {example.com/owner: edge}
podLabels: {tier: mesh}
service:
  type: ClusterIP
  annotations: {example.com/lb: internal}
  externalTrafficPolicy: ""
  ports:
    - {name: http2, port: 80, targetPort: 8080}
    - {name: https, port: 443, targetPort: 8443, protocol: TCP}
    - {name: tcp-custom, port: 9000, targetPort: 9000}
`))
		checkCommon(t, "gateway", objs, false, false)
		d := typed[appsv1.Deployment](t, mustFind(t, objs, "Deployment", "istio-egressgateway"))
		pl := d.Spec.Template.Labels
		if pl["istio"] != "egressgateway" || pl["app"] != "istio-egressgateway" || pl["team"] != "edge" || pl["tier"] != "mesh" ||
			pl["service.istio.io/canonical-name"] != "istio-egressgateway" || pl["sidecar.istio.io/inject"] != "false" {
			t.Errorf("egress pod labels = %v", pl)
		}
		if d.Spec.Template.Annotations["example.com/owner"] != "edge" || d.Spec.Template.Annotations["prometheus.io/port"] != "15090" {
			t.Errorf("egress pod annotations = %v", d.Spec.Template.Annotations)
		}
		if envValue(d.Spec.Template.Spec.Containers[0].Env, "GATEWAY_KIND") != "egress" {
			t.Error("GATEWAY_KIND is not egress")
		}
		if !reflect.DeepEqual(d.Spec.Template.Spec.Containers[0].Args, []string{"router", "--gateway-name=istio-egressgateway"}) {
			t.Errorf("args = %v", d.Spec.Template.Spec.Containers[0].Args)
		}
		svc := typed[corev1.Service](t, mustFind(t, objs, "Service", "istio-egressgateway"))
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Annotations["example.com/lb"] != "internal" {
			t.Errorf("Service = %+v", svc)
		}
		checkServicePorts(t, svc, map[string][2]int{"http2": {80, 8080}, "https": {443, 8443}, "tcp-custom": {9000, 9000}})
		wantSel := map[string]string{"app": "istio-egressgateway", "istio": "egressgateway", "team": "edge"}
		if !reflect.DeepEqual(svc.Spec.Selector, wantSel) {
			t.Errorf("Service selector = %v, want %v", svc.Spec.Selector, wantSel)
		}
		if !reflect.DeepEqual(d.Spec.Selector.MatchLabels, wantSel) {
			t.Errorf("Deployment selector = %v, want %v", d.Spec.Selector.MatchLabels, wantSel)
		}
		mustFind(t, objs, "ServiceAccount", "istio-egressgateway-service-account")
	})

	t.Run("load balancer settings", func(t *testing.T) {
		objs := mustRender(t, "gateway", vals(t, `
service:
  loadBalancerIP: 203.0.113.10
  externalTrafficPolicy: Local
  type: NodePort
  ports: [{name: http2, port: 80, targetPort: 8080, nodePort: 30080}]
`))
		checkCommon(t, "gateway", objs, false, false)
		svc := typed[corev1.Service](t, mustFind(t, objs, "Service", "istio-ingressgateway"))
		if svc.Spec.LoadBalancerIP != "203.0.113.10" || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
			svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != 30080 {
			t.Errorf("Service spec = %+v", svc.Spec)
		}
	})
}

func TestSchemaRejectsBadValues(t *testing.T) {
	const prefix = "values don't meet the specifications of the schema"
	cases := []struct {
		chart, values, want string
	}{
		{"base", "replicas: 1", "additional properties 'replicas' not allowed"},
		{"base", "global: {hub: 3}", "at '/global/hub': got number, want string"},
		{"controlplane", `env: {"1BAD": x}`, "/env"},
		{"controlplane", "meshConfig: []", "at '/meshConfig': got array, want object"},
		{"injector", "webhook: {failurePolicy: Sometimes}", "/webhook/failurePolicy"},
		{"injector", "sidecar: {nativeSidecar: maybe}", "/sidecar/nativeSidecar"},
		{"injector", "sidecar: {excludeNamespaces: kube-public}", "at '/sidecar/excludeNamespaces': got string, want array"},
		{"gateway", "kind: sideways", "/kind"},
		{"gateway", "service: {ports: [{name: http, port: 80, targetPort: 80}]}", "at '/service/ports/0/targetPort': minimum: got 80"},
		{"gateway", "service: {ports: [{name: http, port: 80}]}", "missing property 'targetPort'"},
		{"gateway", "name: Istio_Gateway", "/name"},
		{"gateway", "autoscaling: {enabled: \"yes please\"}", "at '/autoscaling/enabled': got string, want boolean"},
		{"gateway", "global: {revision: Canary}", "/global/revision"},
		{"prometheus", "retention: forever", "/retention"},
		{"kiali", "image: 7", "at '/image': got number, want string"},
		{"grafana", "autoscaling: {enabled: true}", "additional properties 'autoscaling' not allowed"},
	}
	// A wrong-typed replicas and an unknown key fail in every chart that has them.
	for _, name := range charts.Names {
		if name != "base" {
			cases = append(cases, struct{ chart, values, want string }{name, "replicas: three", "at '/replicas': got string, want integer"})
		}
		cases = append(cases, struct{ chart, values, want string }{name, "replicaz: 3", "additional properties 'replicaz' not allowed"})
		cases = append(cases, struct{ chart, values, want string }{name, "global: {imagePullPolicy: Sometimes}", "/global/imagePullPolicy"})
		cases = append(cases, struct{ chart, values, want string }{name, "global: {tag: 1.2}", "at '/global/tag': got number, want string"})
	}
	for _, tc := range cases {
		t.Run(tc.chart+"/"+tc.values, func(t *testing.T) {
			_, err := renderChart(t, tc.chart, vals(t, tc.values))
			if err == nil {
				t.Fatalf("%s accepted %q", tc.chart, tc.values)
			}
			if !strings.Contains(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not name the problem:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestIstioServiceNames(t *testing.T) {
	want := map[string][]string{
		"controlplane": {"istiod"},
		"injector":     {"istio-sidecar-injector"},
		"gateway":      {"istio-ingressgateway"},
		"prometheus":   {"prometheus"},
		"grafana":      {"grafana"},
		"jaeger":       {"tracing", "jaeger-collector", "zipkin"},
		"kiali":        {"kiali"},
	}
	ports := map[string]map[string][2]int{
		"prometheus":       {"http": {9090, 9090}},
		"grafana":          {"service": {3000, 3000}},
		"tracing":          {"http-query": {80, 16686}, "grpc-query": {16685, 16685}},
		"zipkin":           {"http-query": {9411, 9411}},
		"kiali":            {"http": {20001, 20001}, "http-metrics": {9090, 9090}},
		"jaeger-collector": {"grpc-otlp": {4317, 4317}, "http-otlp": {4318, 4318}, "http-zipkin": {9411, 9411}, "grpc-jaeger": {14250, 14250}, "http-jaeger": {14268, 14268}},
	}
	for chart, names := range want {
		objs := mustRender(t, chart, nil)
		for _, name := range names {
			svc := typed[corev1.Service](t, mustFind(t, objs, "Service", name))
			if p, ok := ports[name]; ok {
				checkServicePorts(t, svc, p)
			}
		}
	}
}

func TestAddons(t *testing.T) {
	images := map[string]string{
		"prometheus": "prom/prometheus:v3.5.0",
		"grafana":    "grafana/grafana:12.1.1",
		"jaeger":     "jaegertracing/jaeger:2.9.0",
		"kiali":      "quay.io/kiali/kiali:v2.14",
	}
	users := map[string]int64{"prometheus": 65534, "grafana": 472, "jaeger": 10001, "kiali": 1000}
	rendered := map[string][]*unstructured.Unstructured{}
	for _, name := range addonCharts {
		objs := mustRender(t, name, vals(t, `
replicas: 2
podAnnotations: {example.com/a: b}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Exists}]
global: {imagePullSecrets: [regcred]}
`))
		rendered[name] = objs
		checkCommon(t, name, objs, false, false)
		d := typed[appsv1.Deployment](t, mustFind(t, objs, "Deployment", name))
		pod := d.Spec.Template.Spec
		if c := pod.Containers[0]; c.Image != images[name] || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s image %s pull %s", name, c.Image, c.ImagePullPolicy)
		}
		if *pod.SecurityContext.RunAsUser != users[name] {
			t.Errorf("%s runs as %d, want the image's user %d", name, *pod.SecurityContext.RunAsUser, users[name])
		}
		if *d.Spec.Replicas != 2 || d.Spec.Template.Annotations["example.com/a"] != "b" ||
			pod.NodeSelector["kubernetes.io/os"] != "linux" || len(pod.Tolerations) != 1 ||
			len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "regcred" {
			t.Errorf("%s ignores its scheduling values: %+v", name, pod)
		}
		if d.Spec.Template.Labels["sidecar.istio.io/inject"] != "false" {
			t.Errorf("%s pods may be injected", name)
		}
	}

	// Prometheus scrapes istiod and annotated pods.
	prom := typed[corev1.ConfigMap](t, mustFind(t, rendered["prometheus"], "ConfigMap", "prometheus"))
	var promCfg struct {
		ScrapeConfigs []struct {
			JobName        string           `json:"job_name"`
			RelabelConfigs []map[string]any `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(prom.Data["prometheus.yml"]), &promCfg); err != nil {
		t.Fatalf("prometheus.yml does not parse: %v", err)
	}
	var jobs []string
	for _, j := range promCfg.ScrapeConfigs {
		jobs = append(jobs, j.JobName)
	}
	for _, j := range []string{"istiod", "kubernetes-pods"} {
		if !slices.Contains(jobs, j) {
			t.Errorf("prometheus has no %s job (jobs %v)", j, jobs)
		}
	}
	if !strings.Contains(prom.Data["prometheus.yml"], "istiod;http-monitoring") ||
		!strings.Contains(prom.Data["prometheus.yml"], "__meta_kubernetes_pod_annotation_prometheus_io_scrape") {
		t.Error("prometheus does not select istiod's monitoring port and annotated pods")
	}
	pd := typed[appsv1.Deployment](t, mustFind(t, rendered["prometheus"], "Deployment", "prometheus"))
	if want := []string{"--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
		"--storage.tsdb.retention.time=6h", "--web.enable-lifecycle"}; !reflect.DeepEqual(pd.Spec.Template.Spec.Containers[0].Args, want) {
		t.Errorf("prometheus args = %v", pd.Spec.Template.Spec.Containers[0].Args)
	}
	pcr := typed[rbacv1.ClusterRole](t, mustFind(t, rendered["prometheus"], "ClusterRole", "prometheus-"+meshNamespace))
	for _, r := range []string{"nodes", "nodes/metrics", "services", "endpoints", "pods"} {
		if !allows(pcr.Rules, "", r, "watch") {
			t.Errorf("prometheus may not watch %s", r)
		}
	}

	// Jaeger serves its query API under the base path Grafana and Kiali use.
	jcm := typed[corev1.ConfigMap](t, mustFind(t, rendered["jaeger"], "ConfigMap", "jaeger"))
	var jcfg struct {
		Extensions struct {
			Query struct {
				BasePath string `json:"base_path"`
				HTTP     struct {
					Endpoint string `json:"endpoint"`
				} `json:"http"`
			} `json:"jaeger_query"`
			Health struct {
				HTTP struct {
					Endpoint string `json:"endpoint"`
					Status   struct {
						Path string `json:"path"`
					} `json:"status"`
				} `json:"http"`
			} `json:"healthcheckv2"`
		} `json:"extensions"`
		Receivers map[string]any `json:"receivers"`
	}
	if err := yaml.Unmarshal([]byte(jcm.Data["config.yaml"]), &jcfg); err != nil {
		t.Fatalf("jaeger config does not parse: %v", err)
	}
	basePath := jcfg.Extensions.Query.BasePath
	if basePath != "/jaeger" || jcfg.Extensions.Query.HTTP.Endpoint != "0.0.0.0:16686" {
		t.Errorf("jaeger_query = %+v", jcfg.Extensions.Query)
	}
	for _, r := range []string{"otlp", "zipkin", "jaeger"} {
		if _, ok := jcfg.Receivers[r]; !ok {
			t.Errorf("jaeger has no %s receiver", r)
		}
	}
	jd := typed[appsv1.Deployment](t, mustFind(t, rendered["jaeger"], "Deployment", "jaeger"))
	if p := jd.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet; p.Path != jcfg.Extensions.Health.HTTP.Status.Path ||
		jcfg.Extensions.Health.HTTP.Endpoint != fmt.Sprintf("0.0.0.0:%d", p.Port.IntValue()) {
		t.Errorf("jaeger readinessProbe %s:%s does not match healthcheckv2 %+v", p.Port.String(), p.Path, jcfg.Extensions.Health)
	}

	// Grafana: data sources, provider and the dashboards we ship.
	gcm := typed[corev1.ConfigMap](t, mustFind(t, rendered["grafana"], "ConfigMap", "grafana"))
	var ds struct {
		Datasources []struct {
			Name, Type, URL, UID string
			IsDefault            bool `json:"isDefault"`
		} `json:"datasources"`
	}
	if err := yaml.Unmarshal([]byte(gcm.Data["datasources.yaml"]), &ds); err != nil {
		t.Fatalf("datasources.yaml does not parse: %v", err)
	}
	urls := map[string]string{}
	for _, d := range ds.Datasources {
		urls[d.Type] = d.URL
		if d.Type == "prometheus" && (!d.IsDefault || d.UID != "prometheus") {
			t.Errorf("Prometheus data source = %+v", d)
		}
	}
	if urls["prometheus"] != "http://prometheus:9090" {
		t.Errorf("Prometheus data source URL = %q", urls["prometheus"])
	}
	if u, err := url.Parse(urls["jaeger"]); err != nil || u.Host != "tracing:80" || u.Path != basePath {
		t.Errorf("Jaeger data source URL %q does not reach the tracing Service under %s", urls["jaeger"], basePath)
	}
	var providers struct {
		Providers []struct {
			Options struct{ Path string } `json:"options"`
		} `json:"providers"`
	}
	if err := yaml.Unmarshal([]byte(gcm.Data["dashboardproviders.yaml"]), &providers); err != nil || len(providers.Providers) != 1 {
		t.Fatalf("dashboardproviders.yaml = %q (%v)", gcm.Data["dashboardproviders.yaml"], err)
	}
	gd := typed[appsv1.Deployment](t, mustFind(t, rendered["grafana"], "Deployment", "grafana"))
	checkMount(t, gd, providers.Providers[0].Options.Path, func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == "istio-grafana-dashboards"
	})
	checkMount(t, gd, "/var/lib/grafana", func(v corev1.Volume) bool { return v.EmptyDir != nil })
	checkMount(t, gd, "/tmp", func(v corev1.Volume) bool { return v.EmptyDir != nil })
	for k, v := range map[string]string{"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Admin", "GF_AUTH_BASIC_ENABLED": "false"} {
		if got := envValue(gd.Spec.Template.Spec.Containers[0].Env, k); got != v {
			t.Errorf("grafana %s = %q, want %q", k, got, v)
		}
	}
	checkDashboards(t, typed[corev1.ConfigMap](t, mustFind(t, rendered["grafana"], "ConfigMap", "istio-grafana-dashboards")))

	// Kiali points at the other add-ons and the control plane.
	kcm := typed[corev1.ConfigMap](t, mustFind(t, rendered["kiali"], "ConfigMap", "kiali"))
	var kcfg struct {
		IstioNamespace string `json:"istio_namespace"`
		Auth           struct{ Strategy string }
		LoginToken     struct {
			SigningKey string `json:"signing_key"`
		} `json:"login_token"`
		Deployment struct {
			ClusterWideAccess bool `json:"cluster_wide_access"`
		}
		Server struct {
			Port    int
			WebRoot string `json:"web_root"`
		}
		ExternalServices struct {
			Prometheus struct{ URL string }
			Tracing    struct {
				InternalURL string `json:"internal_url"`
				UseGRPC     bool   `json:"use_grpc"`
			}
			Grafana struct {
				InternalURL string `json:"internal_url"`
			}
			Istio struct {
				ConfigMapName        string `json:"config_map_name"`
				IstiodDeploymentName string `json:"istiod_deployment_name"`
			}
		} `json:"external_services"`
	}
	if err := yaml.Unmarshal([]byte(kcm.Data["config.yaml"]), &kcfg); err != nil {
		t.Fatalf("kiali config does not parse: %v", err)
	}
	es := kcfg.ExternalServices
	if kcfg.IstioNamespace != meshNamespace || kcfg.Auth.Strategy != "anonymous" || !kcfg.Deployment.ClusterWideAccess ||
		es.Prometheus.URL != "http://prometheus."+meshNamespace+":9090" ||
		es.Tracing.InternalURL != "http://tracing."+meshNamespace+":80"+basePath || es.Tracing.UseGRPC ||
		es.Grafana.InternalURL != "http://grafana."+meshNamespace+":3000" ||
		es.Istio.ConfigMapName != "istio" || es.Istio.IstiodDeploymentName != "istiod" {
		t.Errorf("kiali config = %+v", kcfg)
	}
	if n := len(kcfg.LoginToken.SigningKey); n != 16 && n != 24 && n != 32 {
		t.Errorf("kiali signing key has length %d", n)
	}
	kd := typed[appsv1.Deployment](t, mustFind(t, rendered["kiali"], "Deployment", "kiali"))
	if p := kd.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet; p.Path != kcfg.Server.WebRoot+"/healthz" || p.Port.IntValue() != kcfg.Server.Port {
		t.Errorf("kiali readinessProbe %+v does not match its server config", p)
	}
	kcr := typed[rbacv1.ClusterRole](t, mustFind(t, rendered["kiali"], "ClusterRole", "kiali-"+meshNamespace))
	for _, r := range kcr.Rules {
		for _, v := range r.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("kiali ClusterRole grants %s on %v", v, r.Resources)
			}
		}
	}
	for _, need := range [][2]string{{"", "pods"}, {"", "pods/log"}, {"apps", "deployments"}, {"batch", "cronjobs"},
		{"autoscaling", "horizontalpodautoscalers"}, {"networking.istio.io", "*"}, {"security.istio.io", "*"}, {"telemetry.istio.io", "*"}} {
		if !allows(kcr.Rules, need[0], need[1], "list") {
			t.Errorf("kiali may not list %s/%s", need[0], need[1])
		}
	}

	// The Kiali config follows the revision.
	kcanary := typed[corev1.ConfigMap](t, mustFind(t, mustRender(t, "kiali", vals(t, "global: {revision: canary}")), "ConfigMap", "kiali"))
	if !strings.Contains(kcanary.Data["config.yaml"], "config_map_name: istio-canary") ||
		!strings.Contains(kcanary.Data["config.yaml"], "istiod_deployment_name: istiod-canary") {
		t.Errorf("kiali config ignores the revision:\n%s", kcanary.Data["config.yaml"])
	}
}

// checkDashboards validates the Grafana dashboards Mizzen ships.
func checkDashboards(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	titles := map[string]bool{}
	for key, raw := range cm.Data {
		var d struct {
			UID           string `json:"uid"`
			Title         string `json:"title"`
			SchemaVersion int    `json:"schemaVersion"`
			Templating    struct {
				List []struct {
					Name string `json:"name"`
				} `json:"list"`
			} `json:"templating"`
			Panels []struct {
				ID         int    `json:"id"`
				Type       string `json:"type"`
				Title      string `json:"title"`
				Datasource *struct {
					UID string `json:"uid"`
				} `json:"datasource"`
				GridPos struct{ H, W, X, Y int } `json:"gridPos"`
				Targets []struct {
					Expr  string `json:"expr"`
					RefID string `json:"refId"`
				} `json:"targets"`
			} `json:"panels"`
		}
		dec := json.NewDecoder(strings.NewReader(raw))
		if err := dec.Decode(&d); err != nil {
			t.Errorf("dashboard %s is not valid JSON: %v", key, err)
			continue
		}
		if !strings.HasSuffix(key, ".json") || d.UID == "" || d.SchemaVersion < 39 || len(d.Panels) == 0 {
			t.Errorf("dashboard %s: uid %q schemaVersion %d panels %d", key, d.UID, d.SchemaVersion, len(d.Panels))
		}
		titles[d.Title] = true
		ids := map[int]bool{}
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
		}
		exprs := ""
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("dashboard %s: panel %q has a missing or duplicate id", key, p.Title)
			}
			ids[p.ID] = true
			if p.GridPos.W < 1 || p.GridPos.W > 24 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
				t.Errorf("dashboard %s: panel %q has gridPos %+v", key, p.Title, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "prometheus" || len(p.Targets) == 0 {
				t.Errorf("dashboard %s: panel %q has no Prometheus query", key, p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" || strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") {
					t.Errorf("dashboard %s: panel %q has a bad query %q", key, p.Title, tg.Expr)
				}
				for _, v := range []string{"$service", "$workload", "$namespace"} {
					if strings.Contains(tg.Expr, v) && !vars[strings.TrimPrefix(v, "$")] {
						t.Errorf("dashboard %s: query uses undefined variable %s", key, v)
					}
				}
				exprs += tg.Expr + "\n"
			}
		}
		switch d.Title {
		case "Mizzen Mesh":
			for _, m := range []string{"istio_requests_total", "istio_request_duration_milliseconds_bucket", "histogram_quantile(0.50", "histogram_quantile(0.90", "histogram_quantile(0.99", "destination_service"} {
				if !strings.Contains(exprs, m) {
					t.Errorf("Mizzen Mesh does not query %s", m)
				}
			}
		case "Mizzen Service", "Mizzen Workload":
			for _, m := range []string{"istio_requests_total", "response_code", "istio_request_duration_milliseconds_bucket", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"} {
				if !strings.Contains(exprs, m) {
					t.Errorf("%s does not query %s", d.Title, m)
				}
			}
			v := "service"
			if d.Title == "Mizzen Workload" {
				v = "workload"
			}
			if !vars[v] || !strings.Contains(exprs, "$"+v) {
				t.Errorf("%s is not templated by $%s", d.Title, v)
			}
		case "Mizzen Control Plane":
			for _, m := range []string{"pilot_xds_pushes", "pilot_xds{", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
				if !strings.Contains(exprs, m) {
					t.Errorf("Mizzen Control Plane does not query %s", m)
				}
			}
		}
	}
	for _, want := range []string{"Mizzen Mesh", "Mizzen Service", "Mizzen Workload", "Mizzen Control Plane"} {
		if !titles[want] {
			t.Errorf("dashboard %q is missing", want)
		}
	}
}

func TestBaseCRDs(t *testing.T) {
	c := loadChart(t, "base")
	crdFiles := c.CRDObjects()
	wantFiles := []string{"crds/networking.istio.io.yaml", "crds/security.istio.io.yaml", "crds/telemetry.istio.io.yaml"}
	var gotFiles []string
	for _, f := range crdFiles {
		gotFiles = append(gotFiles, f.Name)
	}
	sort.Strings(gotFiles)
	if !reflect.DeepEqual(gotFiles, wantFiles) {
		t.Fatalf("CRD files = %v, want %v", gotFiles, wantFiles)
	}

	served := map[string][]string{}
	for _, f := range crdFiles {
		group := strings.TrimSuffix(path.Base(f.Name), ".yaml")
		if !bytes.HasPrefix(f.File.Data, []byte("# Generated by hack/gen-base-crds from istio.io/api v")) {
			t.Errorf("%s lacks the generated header", f.Name)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(f.File.Data)))
		for {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			if isBlank(raw) {
				continue
			}
			j, err := yaml.YAMLToJSON(raw)
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(j); err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			crd := typed[apiextensionsv1.CustomResourceDefinition](t, u)
			if crd.Spec.Group != group {
				t.Errorf("%s holds %s of group %s", f.Name, crd.Name, crd.Spec.Group)
			}
			for k := range crd.Annotations {
				if strings.HasPrefix(k, "helm.sh/") {
					t.Errorf("%s keeps annotation %s", crd.Name, k)
				}
			}
			for _, k := range []string{"chart", "heritage", "release"} {
				if _, ok := crd.Labels[k]; ok {
					t.Errorf("%s keeps release label %s", crd.Name, k)
				}
			}
			storage := 0
			for _, v := range crd.Spec.Versions {
				if v.Served {
					served[crd.Spec.Names.Kind] = append(served[crd.Spec.Names.Kind], v.Name)
				}
				if v.Storage {
					storage++
				}
				if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
					t.Errorf("%s %s has no schema", crd.Name, v.Name)
				}
			}
			if storage != 1 {
				t.Errorf("%s has %d storage versions", crd.Name, storage)
			}
		}
	}
	networking := []string{"v1", "v1alpha3", "v1beta1"}
	security := []string{"v1", "v1beta1"}
	for kind, want := range map[string][]string{
		"VirtualService":        networking,
		"DestinationRule":       networking,
		"Gateway":               networking,
		"ServiceEntry":          networking,
		"Sidecar":               networking,
		"WorkloadEntry":         networking,
		"PeerAuthentication":    security,
		"AuthorizationPolicy":   security,
		"RequestAuthentication": security,
		"Telemetry":             {"v1", "v1alpha1"},
	} {
		got := slices.Clone(served[kind])
		sort.Strings(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s serves %v, want %v", kind, got, want)
		}
	}
	for kind := range served {
		if kind == "WasmPlugin" || kind == "TrafficExtension" {
			t.Errorf("CRD of kind %s should not be in the base chart", kind)
		}
	}
}

// TestOverridesRender renders each chart with its values set to non-default
// values of the right type, so a key the schema wrongly rejects, or one the
// templates ignore, is caught.
func TestOverridesRender(t *testing.T) {
	globals := `
global:
  hub: registry.example.com/mesh
  image: mizzen-dev
  tag: "1.2.3"
  imagePullPolicy: Always
  imagePullSecrets: [one, two]
  trustDomain: example.org
`
	workload := globals + `
replicas: 3
resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 2Gi}}
podAnnotations: {example.com/x: "y"}
podLabels: {example.com/team: mesh}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: mesh, effect: NoSchedule}]
affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: x}}}}]}}
`
	for _, name := range workloadCharts {
		t.Run(name, func(t *testing.T) {
			objs := mustRender(t, name, vals(t, workload))
			checkCommon(t, name, objs, false, false)
			for _, u := range ofKind(objs, "Deployment") {
				d := typed[appsv1.Deployment](t, u)
				pod := d.Spec.Template.Spec
				c := pod.Containers[0]
				if *d.Spec.Replicas != 3 || c.Image != "registry.example.com/mesh/mizzen-dev:1.2.3" || c.ImagePullPolicy != corev1.PullAlways ||
					len(pod.ImagePullSecrets) != 2 || pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil ||
					len(pod.Tolerations) != 1 || pod.NodeSelector["kubernetes.io/os"] != "linux" ||
					d.Spec.Template.Annotations["example.com/x"] != "y" || d.Spec.Template.Labels["example.com/team"] != "mesh" ||
					c.Resources.Requests.Cpu().String() != "1" {
					t.Errorf("%s: overrides not applied: %+v", name, d.Spec)
				}
			}
		})
	}
	for _, name := range append([]string{"base"}, addonCharts...) {
		t.Run(name, func(t *testing.T) {
			if _, err := renderChart(t, name, vals(t, globals)); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Values built in Go (as the operator does) rather than parsed from YAML.
	if _, err := renderChart(t, "controlplane", map[string]any{"replicas": 2, "env": map[string]any{"A": "b"}}); err != nil {
		t.Fatal(err)
	}
}

// A user who brings the injector's serving certificate (e.g. from
// cert-manager) gets it mounted and passed to the injector.
func TestInjectorTakesAGivenCertificate(t *testing.T) {
	chrt, err := charts.Load("injector")
	if err != nil {
		t.Fatal(err)
	}
	vals, err := util.ToRenderValuesWithSchemaValidation(chrt, map[string]any{"webhook": map[string]any{"certificateSecret": "injector-cert"}},
		common.ReleaseOptions{Name: "injector", Namespace: "istio-system", IsInstall: true}, common.DefaultCapabilities, false)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(chrt, vals)
	if err != nil {
		t.Fatal(err)
	}
	dep := files["injector/templates/deployment.yaml"]
	for _, want := range []string{"--tls-cert-dir=/etc/istio/webhook-certs", "secretName: injector-cert", "mountPath: /etc/istio/webhook-certs"} {
		if !strings.Contains(dep, want) {
			t.Errorf("the injector Deployment lacks %q:\n%s", want, dep)
		}
	}
}
