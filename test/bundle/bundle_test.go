// Package bundle checks the OLM bundle Mizzen ships to OperatorHub (bundle/,
// bundle.Dockerfile): that OperatorHub's validators accept it, that it is
// what hack/gen-bundle generates from the current sources, and that what it
// promises matches the operator: the images the charts run, the RBAC
// controller-gen generates, and examples the CRD accepts.
//
// After changing config/, the samples, the CRD, the charts or the version:
// make bundle.
package bundle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/hack/gen-bundle/bundlegen"
	"github.com/mizzen-mesh/mizzen/internal/profile"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/internal/version"
)

const root = "../.."

const regenerate = "regenerate the bundle with 'make bundle' and commit it"

// acceptedWarnings are the validators' warnings the bundle keeps on purpose.
// Any other warning fails the test, and so does an accepted warning that no
// longer occurs (drop it then).
var acceptedWarnings = []struct {
	why   string
	match func(msg string) bool
}{{
	// Mizzen installs the Istio API CRDs (networking.istio.io, ...) as part
	// of the mesh, as istioctl and Istio's base chart do: its service
	// account must be able to create CRDs.
	why:   "the operator installs the Istio API CRDs",
	match: func(msg string) bool { return strings.Contains(msg, "CSV contains permissions to create CRD") },
}, {
	// The channel is "alpha", like the operator's maturity; the naming
	// convention (candidate, fast, stable) is a recommendation.
	why: "the bundle is published in the alpha channel",
	match: func(msg string) bool {
		return strings.Contains(msg, `channel(s) ["alpha"] are not following the recommended naming convention`)
	},
}, {
	// The validator warns about any RBAC rule on a resource that once had a
	// beta version removed in 1.25 (cronjobs, endpointslices, events,
	// horizontalpodautoscalers, poddisruptionbudgets): a rule cannot name a
	// version. The operator uses their GA versions. Accepted only while every
	// finding is an RBAC rule; a deprecated manifest still fails.
	why: "RBAC rules name no API version; the operator uses the GA APIs",
	match: func(msg string) bool {
		const marker = "this bundle is using APIs which were deprecated and removed in v1.25"
		if !strings.Contains(msg, marker) {
			return false
		}
		locations := quoted.FindAllStringSubmatch(msg, -1)
		for _, loc := range locations {
			if !rbacRule.MatchString(loc[1]) {
				return false
			}
		}
		return len(locations) > 0
	},
}}

var (
	quoted   = regexp.MustCompile(`"([^"]+)"`)
	rbacRule = regexp.MustCompile(`^ClusterServiceVersion\.Spec\.InstallStrategy\.StrategySpec\.(Cluster)?Permissions\[\d+\]\.Rules\[\d+\]$`)
)

// TestValidators runs the validators OperatorHub runs on a submitted bundle.
func TestValidators(t *testing.T) {
	b := loadBundle(t)
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.GoodPracticesValidator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
	)
	results := validators.Validate(b.ObjectsToValidate()...)
	seen := make([]bool, len(acceptedWarnings))
	for _, r := range results {
		for _, e := range r.Errors {
			t.Errorf("validator error (%s): %s", r.Name, e.Error())
		}
		for _, w := range r.Warnings {
			why := ""
			for i, a := range acceptedWarnings {
				if a.match(w.Error()) {
					why, seen[i] = a.why, true
				}
			}
			if why == "" {
				t.Errorf("validator warning (%s): %s", r.Name, w.Error())
			} else {
				t.Logf("validator warning (%s), accepted because %s: %s", r.Name, why, w.Error())
			}
		}
	}
	for i, a := range acceptedWarnings {
		if !seen[i] {
			t.Errorf("the accepted warning (%s) no longer occurs: drop it from acceptedWarnings", a.why)
		}
	}

	// The same validators must refuse a broken copy, or passing proves nothing.
	broken := loadBundle(t)
	broken.CSV.Spec.Provider.Name = ""
	broken.CSV.Spec.InstallModes = nil
	errs := 0
	for _, r := range validators.Validate(broken.ObjectsToValidate()...) {
		errs += len(r.Errors)
	}
	if errs < 2 {
		t.Errorf("the validators find %d errors in a CSV without provider and install modes, want at least 2", errs)
	}
}

// TestCurrent fails when the checked-in bundle is not what hack/gen-bundle
// generates from the current sources.
func TestCurrent(t *testing.T) {
	stale, err := bundlegen.Check(bundlegen.DefaultOptions(root))
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) > 0 {
		t.Errorf("stale OLM bundle files: %s; %s", strings.Join(stale, ", "), regenerate)
	}
}

// TestRelatedImages renders every profile with every component and add-on on
// and requires relatedImages to be exactly the images the charts run plus the
// operator's own, so that a mirrored (disconnected) install has every image.
func TestRelatedImages(t *testing.T) {
	csv := loadBundle(t).CSV
	operatorImage := version.Hub + "/" + version.Image + ":" + version.Version
	want := map[string]string{operatorImage: "the operator"}
	on := func() *bool { b := true; return &b }
	for _, p := range profile.Names() {
		user := &v1alpha1.MeshInstallSpec{
			Profile: p,
			Components: &v1alpha1.Components{
				Base:            &v1alpha1.BaseComponent{Enabled: on()},
				ControlPlane:    &v1alpha1.ControlPlaneComponent{WorkloadComponent: v1alpha1.WorkloadComponent{Enabled: on()}},
				Injector:        &v1alpha1.WorkloadComponent{Enabled: on()},
				IngressGateways: []v1alpha1.GatewayComponent{{Name: "istio-ingressgateway", Enabled: on()}, {Name: "extra-ingress", Enabled: on()}},
				EgressGateways:  []v1alpha1.GatewayComponent{{Name: "istio-egressgateway", Enabled: on()}},
				Addons: &v1alpha1.Addons{
					Prometheus: &v1alpha1.PrometheusAddon{AddonComponent: v1alpha1.AddonComponent{Enabled: on()}},
					Grafana:    &v1alpha1.AddonComponent{Enabled: on()},
					Jaeger:     &v1alpha1.AddonComponent{Enabled: on()},
					Kiali:      &v1alpha1.AddonComponent{Enabled: on()},
				},
			},
		}
		spec, err := profile.Apply(user)
		if err != nil {
			t.Fatalf("profile %s: %v", p, err)
		}
		res, err := render.Render("bundle-test", spec, render.Options{Version: version.Version, Hub: version.Hub, Image: version.Image})
		if err != nil {
			t.Fatalf("rendering profile %s with everything on: %v", p, err)
		}
		disabled := 0
		for _, c := range res.Components {
			if !c.Enabled {
				disabled++
			}
		}
		if disabled > 0 {
			t.Fatalf("profile %s: %d components stayed off with everything switched on: %+v", p, disabled, res.Components)
		}
		for _, o := range res.Objects {
			for _, img := range podImages(o.Object) {
				if _, ok := want[img]; !ok {
					want[img] = o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName() + " (profile " + p + ")"
				}
			}
		}
	}
	if len(want) < 2 {
		t.Fatalf("the charts render no container image besides the operator's: %v", want)
	}

	got := map[string]bool{}
	names := map[string]bool{}
	for _, ri := range csv.Spec.RelatedImages {
		if ri.Name == "" || names[ri.Name] {
			t.Errorf("relatedImages: image %s has an empty or duplicate name %q", ri.Image, ri.Name)
		}
		names[ri.Name] = true
		if got[ri.Image] {
			t.Errorf("relatedImages lists %s twice", ri.Image)
		}
		got[ri.Image] = true
	}
	for img, from := range want {
		if !got[img] {
			t.Errorf("relatedImages lacks %s, run by %s; %s", img, from, regenerate)
		}
	}
	for img := range got {
		if _, ok := want[img]; !ok {
			t.Errorf("relatedImages lists %s, which neither the operator nor any chart runs; %s", img, regenerate)
		}
	}

	if ci := csv.Annotations["containerImage"]; ci != operatorImage {
		t.Errorf("containerImage annotation is %q, want the operator's image %q", ci, operatorImage)
	}
	deps := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deps) != 1 {
		t.Fatalf("install strategy has %d deployments, want 1", len(deps))
	}
	for _, c := range deps[0].Spec.Template.Spec.Containers {
		if c.Image != operatorImage {
			t.Errorf("operator container %s runs %s, want %s", c.Name, c.Image, operatorImage)
		}
	}
}

// podImages returns the image of every container, init container and
// ephemeral container of every pod spec inside an object.
func podImages(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for key, val := range v {
			if key == "containers" || key == "initContainers" || key == "ephemeralContainers" {
				list, _ := val.([]any)
				for _, c := range list {
					if cm, ok := c.(map[string]any); ok {
						if img, ok := cm["image"].(string); ok {
							out = append(out, img)
						}
					}
				}
			}
			out = append(out, podImages(val)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, podImages(e)...)
		}
	}
	return out
}

// TestExamples requires alm-examples to hold one MeshInstall per profile,
// each of which the Go type decodes strictly and the bundled CRD's schema
// (OpenAPI, pruning and CEL rules, as the API server applies them) accepts.
func TestExamples(t *testing.T) {
	b := loadBundle(t)
	var examples []json.RawMessage
	if err := json.Unmarshal([]byte(b.CSV.Annotations["alm-examples"]), &examples); err != nil {
		t.Fatalf("alm-examples is not a JSON array: %v", err)
	}
	if len(b.V1CRDs) != 1 {
		t.Fatalf("bundle holds %d v1 CRDs, want the MeshInstall CRD only", len(b.V1CRDs))
	}
	v := newCRValidator(t, b.V1CRDs[0], v1alpha1.GroupVersion.Version)

	profiles := map[string]int{}
	for i, raw := range examples {
		mi := &v1alpha1.MeshInstall{}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(mi); err != nil {
			t.Errorf("alm-examples[%d] does not decode strictly as a MeshInstall: %v", i, err)
			continue
		}
		if mi.APIVersion != v1alpha1.GroupVersion.String() || mi.Kind != "MeshInstall" {
			t.Errorf("alm-examples[%d] is a %s %s, want %s MeshInstall", i, mi.APIVersion, mi.Kind, v1alpha1.GroupVersion)
		}
		if mi.Name == "" {
			t.Errorf("alm-examples[%d] has no name", i)
		}
		p := mi.Spec.Profile
		if p == "" {
			p = v1alpha1.ProfileDefault
		}
		profiles[p]++
		if errs := v.validate(raw); len(errs) > 0 {
			t.Errorf("alm-examples[%d] (%s) is refused by the CRD: %v", i, mi.Name, errs)
		}
	}
	for _, p := range profile.Names() {
		if profiles[p] != 1 {
			t.Errorf("alm-examples has %d MeshInstalls of profile %q, want 1", profiles[p], p)
		}
	}
	if len(examples) != len(profile.Names()) {
		t.Errorf("alm-examples has %d MeshInstalls, want one per profile (%v)", len(examples), profile.Names())
	}

	// The validator must refuse what the API server refuses, for the same
	// reason, or the checks above prove nothing.
	const head = `{"apiVersion":"install.mizzen.dev/v1alpha1","kind":"MeshInstall","metadata":{"name":"x"},"spec":`
	for _, bad := range []struct{ spec, want string }{
		{`{"profile":"huge"}`, `Unsupported value: "huge"`},
		{`{"profil":"demo"}`, "spec.profil: Forbidden: unknown field"},
		{`{"components":{"ingressGateways":[{"name":"gw","service":{"type":"ClusterIP","ports":[{"name":"http","port":80,"nodePort":30080}]}}]}}`,
			"nodePort needs service.type NodePort or LoadBalancer"},
		{`{"revision":"default"}`, "use an empty revision for the default revision"},
	} {
		errs := v.validate([]byte(head + bad.spec + "}"))
		if agg := errs.ToAggregate(); agg == nil || !strings.Contains(agg.Error(), bad.want) {
			t.Errorf("the CRD validator gives %v for spec %s, want an error with %q", errs, bad.spec, bad.want)
		}
	}
}

type crValidator struct {
	t          *testing.T
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

func newCRValidator(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition, version string) *crValidator {
	t.Helper()
	var props *apiextensionsv1.JSONSchemaProps
	for _, v := range crd.Spec.Versions {
		if v.Name == version && v.Schema != nil {
			props = v.Schema.OpenAPIV3Schema
		}
	}
	if props == nil {
		t.Fatalf("CRD %s has no schema for version %s", crd.Name, version)
	}
	internal := &apiextensions.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(props, internal, nil); err != nil {
		t.Fatal(err)
	}
	structural, err := structuralschema.NewStructural(internal)
	if err != nil {
		t.Fatalf("CRD %s: schema is not structural: %v", crd.Name, err)
	}
	sv, _, err := apiservervalidation.NewSchemaValidator(internal)
	if err != nil {
		t.Fatal(err)
	}
	celValidator := cel.NewValidator(structural, true, celconfig.PerCallLimit)
	if celValidator == nil {
		t.Fatalf("CRD %s has no CEL rules; the negative checks expect some", crd.Name)
	}
	return &crValidator{t: t, structural: structural, schema: sv, cel: celValidator}
}

// validate checks an object as the API server does on create: unknown
// fields (which the server would silently drop), defaults, the OpenAPI
// schema, and the CEL rules.
func (v *crValidator) validate(raw []byte) field.ErrorList {
	obj := map[string]any{}
	// integers as int64, as the API server decodes them (CEL cares)
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
		return field.ErrorList{field.Invalid(nil, string(raw), err.Error())}
	}
	var errs field.ErrorList
	pruned := pruning.PruneWithOptions(obj, v.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range pruned {
		errs = append(errs, field.Forbidden(field.NewPath(p), "unknown field"))
	}
	defaulting.Default(obj, v.structural)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, v.schema)...)
	celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

// TestPermissions requires the CSV to grant the operator exactly what
// config/rbac grants it: controller-gen's ClusterRole (from the RBAC markers)
// cluster-wide, and the leader election Role in its own namespace.
func TestPermissions(t *testing.T) {
	strategy := loadBundle(t).CSV.Spec.InstallStrategy
	if strategy.StrategyName != operatorsv1alpha1.InstallStrategyNameDeployment {
		t.Fatalf("install strategy is %q, want deployment", strategy.StrategyName)
	}
	spec := strategy.StrategySpec
	if len(spec.DeploymentSpecs) != 1 {
		t.Fatalf("install strategy has %d deployments, want 1", len(spec.DeploymentSpecs))
	}
	sa := spec.DeploymentSpecs[0].Spec.Template.Spec.ServiceAccountName

	var role rbacv1.ClusterRole
	readYAML(t, "config/rbac/role.yaml", &role)
	var leader rbacv1.Role
	readYAML(t, "config/rbac/leader_election_role.yaml", &leader)

	for _, c := range []struct {
		what  string
		perms []operatorsv1alpha1.StrategyDeploymentPermissions
		want  []rbacv1.PolicyRule
	}{
		{"clusterPermissions", spec.ClusterPermissions, role.Rules},
		{"permissions", spec.Permissions, leader.Rules},
	} {
		if len(c.perms) != 1 {
			t.Errorf("%s has %d entries, want 1", c.what, len(c.perms))
			continue
		}
		if c.perms[0].ServiceAccountName != sa {
			t.Errorf("%s are for service account %q, the operator runs as %q", c.what, c.perms[0].ServiceAccountName, sa)
		}
		if !reflect.DeepEqual(c.perms[0].Rules, c.want) {
			t.Errorf("%s differ from config/rbac; %s\nonly in the bundle: %s\nonly in config/rbac: %s",
				c.what, regenerate, ruleDiff(c.perms[0].Rules, c.want), ruleDiff(c.want, c.perms[0].Rules))
		}
	}
}

// ruleDiff lists the rules of a that b lacks (or has in another position).
func ruleDiff(a, b []rbacv1.PolicyRule) string {
	var out []string
	for i, r := range a {
		if i < len(b) && reflect.DeepEqual(r, b[i]) {
			continue
		}
		j, _ := json.Marshal(r)
		out = append(out, fmt.Sprintf("\n  [%d] %s", i, j))
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, "")
}

func readYAML(t *testing.T, rel string, into any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// TestCRD requires the bundled CRD to be config/crd/bases' byte for byte.
func TestCRD(t *testing.T) {
	const name = "install.mizzen.dev_meshinstalls.yaml"
	want, err := os.ReadFile(filepath.Join(root, "config/crd/bases", name))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "bundle/manifests", name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("bundle/manifests/%s differs from config/crd/bases; %s", name, regenerate)
	}
}

// TestMetadata requires bundle.Dockerfile's labels to be exactly the bundle's
// annotations, and the annotations to name the package and its channel.
func TestMetadata(t *testing.T) {
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	readYAML(t, "bundle/metadata/annotations.yaml", &meta)
	want := map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         "mizzen-operator",
		"operators.operatorframework.io.bundle.channels.v1":        "alpha",
		"operators.operatorframework.io.bundle.channel.default.v1": "alpha",
	}
	if !reflect.DeepEqual(meta.Annotations, want) {
		t.Errorf("bundle/metadata/annotations.yaml: got %v, want %v", meta.Annotations, want)
	}

	f, err := os.Open(filepath.Join(root, "bundle.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	labels := map[string]string{}
	var from []string
	var copies []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			from = append(from, strings.TrimPrefix(line, "FROM "))
		case strings.HasPrefix(line, "LABEL "):
			k, v, _ := strings.Cut(strings.TrimPrefix(line, "LABEL "), "=")
			labels[k] = v
		case strings.HasPrefix(line, "COPY "):
			copies = append(copies, strings.Join(strings.Fields(strings.TrimPrefix(line, "COPY ")), " "))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(from, []string{"scratch"}) {
		t.Errorf("bundle.Dockerfile builds FROM %v, want scratch only", from)
	}
	if !reflect.DeepEqual(labels, meta.Annotations) {
		t.Errorf("bundle.Dockerfile labels %v differ from the bundle annotations %v", labels, meta.Annotations)
	}
	sort.Strings(copies)
	if want := []string{"bundle/manifests /manifests/", "bundle/metadata /metadata/"}; !reflect.DeepEqual(copies, want) {
		t.Errorf("bundle.Dockerfile copies %v, want %v", copies, want)
	}
}

// TestCheckFindsStaleFiles proves the staleness check on a copy of the
// repository's inputs: changing a sample or the generated ClusterRole, or
// leaving a stray file in the bundle, must be reported.
func TestCheckFindsStaleFiles(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(t *testing.T, dir string)
		want   []string
	}{
		{"nothing", func(*testing.T, string) {}, nil},
		{"a sample", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "config/samples/install_v1alpha1_meshinstall_demo.yaml"), "name: demo", "name: demo-changed")
		}, []string{bundlegen.CSVPath}},
		{"the ClusterRole", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "config/rbac/role.yaml"), "- pods/log\n", "")
		}, []string{bundlegen.CSVPath}},
		{"the CRD", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "config/crd/bases/install.mizzen.dev_meshinstalls.yaml"), "shortNames:", "shortNames:\n    - mesh")
		}, []string{"bundle/manifests/install.mizzen.dev_meshinstalls.yaml"}},
		{"a stray bundle file", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "bundle/manifests/old.clusterserviceversion.yaml"), []byte("{}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"bundle/manifests/old.clusterserviceversion.yaml"}},
		{"a lost Dockerfile", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "bundle.Dockerfile")); err != nil {
				t.Fatal(err)
			}
		}, []string{bundlegen.DockerfilePath}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, p := range []string{"config", "bundle", "bundle.Dockerfile"} {
				copyTree(t, filepath.Join(root, p), filepath.Join(dir, p))
			}
			c.change(t, dir)
			o := bundlegen.DefaultOptions(dir)
			stale, err := bundlegen.Check(o)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stale, c.want) {
				t.Fatalf("Check after changing %s reports %v, want %v", c.name, stale, c.want)
			}
			if _, err := bundlegen.Write(o); err != nil {
				t.Fatal(err)
			}
			if stale, err := bundlegen.Check(o); err != nil || len(stale) > 0 {
				t.Fatalf("after Write, Check reports %v (%v), want nothing", stale, err)
			}
		})
	}
}

func edit(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
