// Package bundlegen builds Mizzen's OLM bundle, the package OperatorHub
// installs the operator from, out of the repository's own sources:
//
//   - the operator's Deployment, its service account's permissions and the
//     suggested namespace come from config/default, rendered with kustomize;
//   - the MeshInstall CRD is config/crd/bases, copied byte for byte;
//   - the examples (alm-examples) are config/samples, one per profile;
//   - relatedImages are every image the embedded charts can run, found by
//     rendering every profile with every component and add-on switched on,
//     plus the operator's image.
//
// Generation is deterministic: the same sources give the same bytes, so a
// test can tell when the checked-in bundle is stale (see Check).
package bundlegen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/profile"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/internal/version"
)

// The bundle's fixed facts.
const (
	// PackageName is the OLM package (the OperatorHub entry).
	PackageName = "mizzen-operator"
	// Channel is the one channel the bundle is published in, and the default.
	Channel = "alpha"
	// MinKubeVersion is the oldest Kubernetes the bundle admits. The
	// MeshInstall CRD validates with CEL rules, transition rules included
	// (GA in 1.29), and the charts use autoscaling/v2 and policy/v1; the
	// integration tests run on 1.36. 1.30 leaves a margin above what the
	// code strictly needs.
	MinKubeVersion = "1.30.0"
	// Capabilities is the operator's capability level: it installs,
	// upgrades (spec.version, spec.profile), repairs drift and uninstalls.
	Capabilities = "Full Lifecycle"
	// Repository is where Mizzen's source lives.
	Repository = "https://github.com/mizzen-mesh/mizzen"

	// ManifestsDir and MetadataDir are the bundle's two folders; the
	// generator owns every file in them.
	ManifestsDir = "bundle/manifests"
	MetadataDir  = "bundle/metadata"
	// CSVPath is the ClusterServiceVersion.
	CSVPath = ManifestsDir + "/" + PackageName + ".clusterserviceversion.yaml"
	// AnnotationsPath is the bundle's metadata.
	AnnotationsPath = MetadataDir + "/annotations.yaml"
	// DockerfilePath builds the bundle image from the repository root.
	DockerfilePath = "bundle.Dockerfile"

	crdDir      = "config/crd/bases"
	samplesDir  = "config/samples"
	kustomizeAt = "config/default"
	// managerContainer is the operator's container in config/manager.
	managerContainer = "manager"
	// operatorImageName names the operator's image in relatedImages. The
	// same image holds every mesh binary, so the mesh's workloads run it too.
	operatorImageName = "mizzen"
)

// Options say where the repository is and which image the bundle ships.
type Options struct {
	// Root is the repository root.
	Root string
	// Version is the bundle's version: the operator's and, by default, the
	// mesh's (the operator installs its own version unless told otherwise).
	Version string
	// Hub is the image repository prefix, Image the image's name. The
	// operator and the mesh run the same image: Hub/Image:Version.
	Hub   string
	Image string
	// OperatorImage, when set, replaces Hub/Image:Version as the operator
	// container's image (a digest reference, a mirror). The mesh keeps
	// Hub/Image:Version.
	OperatorImage string
}

// DefaultOptions are the options that describe this build of Mizzen
// (internal/version), for the repository at root.
func DefaultOptions(root string) Options {
	return Options{Root: root, Version: version.Version, Hub: version.Hub, Image: version.Image}
}

// MeshImage is the image the mesh's own workloads run.
func (o Options) MeshImage() string { return render.ImageRef(o.renderOptions()) }

// OperatorImageRef is the operator container's image.
func (o Options) OperatorImageRef() string {
	if o.OperatorImage != "" {
		return o.OperatorImage
	}
	return o.MeshImage()
}

func (o Options) renderOptions() render.Options {
	return render.Options{Version: o.Version, Hub: o.Hub, Image: o.Image}
}

func (o Options) path(rel string) string { return filepath.Join(o.Root, filepath.FromSlash(rel)) }

// Generate returns every file of the bundle by its slash-separated path
// relative to the repository root.
func Generate(o Options) (map[string][]byte, error) {
	ver, err := semver.Parse(strings.TrimPrefix(o.Version, "v"))
	if err != nil {
		return nil, fmt.Errorf("version %q is not semver: %w", o.Version, err)
	}
	if o.Hub == "" || o.Image == "" {
		return nil, errors.New("hub and image must be set")
	}
	files := map[string][]byte{}

	crds, err := readCRDs(o, files)
	if err != nil {
		return nil, err
	}
	inst, err := kustomizeInstall(o, crds)
	if err != nil {
		return nil, err
	}
	examples, err := almExamples(o)
	if err != nil {
		return nil, err
	}
	owned, err := ownedCRDs(crds)
	if err != nil {
		return nil, err
	}
	images, err := RelatedImages(o)
	if err != nil {
		return nil, err
	}

	csv := &operatorsv1alpha1.ClusterServiceVersion{
		TypeMeta: metav1.TypeMeta{
			APIVersion: operatorsv1alpha1.SchemeGroupVersion.String(),
			Kind:       operatorsv1alpha1.ClusterServiceVersionKind,
		},
		ObjectMeta: metav1.ObjectMeta{
			Name: PackageName + ".v" + ver.String(),
			Annotations: map[string]string{
				"alm-examples":   examples,
				"capabilities":   Capabilities,
				"categories":     "Networking",
				"containerImage": o.OperatorImageRef(),
				"description": "Runs an Istio-compatible service mesh from one MeshInstall: control plane, " +
					"gateways, sidecar injector and observability add-ons, kept healthy, upgraded and removed for you.",
				"operatorframework.io/suggested-namespace":          inst.namespace.GetName(),
				"operatorframework.io/suggested-namespace-template": inst.namespaceTemplate,
				"repository": Repository,
				"support":    "Mizzen maintainers",
			},
		},
		Spec: operatorsv1alpha1.ClusterServiceVersionSpec{
			DisplayName: "Mizzen",
			Description: strings.TrimSpace(description) + "\n",
			Keywords: []string{"service mesh", "istio", "mesh", "mtls", "sidecar", "ingress", "gateway",
				"traffic management", "observability", "prometheus", "grafana", "jaeger", "kiali"},
			Maintainers: []operatorsv1alpha1.Maintainer{{Name: "Mizzen maintainers", Email: "maintainers@mizzen.dev"}},
			Provider:    operatorsv1alpha1.AppLink{Name: "Mizzen", URL: Repository},
			Links: []operatorsv1alpha1.AppLink{
				{Name: "Source code", URL: Repository},
				{Name: "Documentation", URL: Repository + "#readme"},
				{Name: "MeshInstall reference", URL: Repository + "#meshinstall-reference"},
			},
			Icon:           []operatorsv1alpha1.Icon{{Data: iconBase64(), MediaType: "image/svg+xml"}},
			Maturity:       "alpha",
			MinKubeVersion: MinKubeVersion,
			InstallModes: []operatorsv1alpha1.InstallMode{
				// MeshInstall is cluster-scoped, and the operator installs
				// into whichever namespace a MeshInstall names and grants
				// the control plane cluster-wide rights: only AllNamespaces
				// fits.
				{Type: operatorsv1alpha1.InstallModeTypeOwnNamespace, Supported: false},
				{Type: operatorsv1alpha1.InstallModeTypeSingleNamespace, Supported: false},
				{Type: operatorsv1alpha1.InstallModeTypeMultiNamespace, Supported: false},
				{Type: operatorsv1alpha1.InstallModeTypeAllNamespaces, Supported: true},
			},
			CustomResourceDefinitions: operatorsv1alpha1.CustomResourceDefinitions{Owned: owned},
			InstallStrategy: operatorsv1alpha1.NamedInstallStrategy{
				StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment,
				StrategySpec: operatorsv1alpha1.StrategyDetailsDeployment{
					DeploymentSpecs:    []operatorsv1alpha1.StrategyDeploymentSpec{inst.deployment},
					ClusterPermissions: inst.clusterPermissions,
					Permissions:        inst.permissions,
				},
			},
			RelatedImages: images,
		},
	}
	csv.Spec.Version.Version = ver

	csvYAML, err := marshalCSV(csv, inst.deploymentSpec)
	if err != nil {
		return nil, err
	}
	files[CSVPath] = csvYAML
	files[AnnotationsPath] = annotationsYAML()
	files[DockerfilePath] = dockerfile()
	return files, nil
}

// bundleAnnotations are the bundle's metadata, in the order they are written.
var bundleAnnotations = [][2]string{
	{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
	{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
	{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
	{"operators.operatorframework.io.bundle.package.v1", PackageName},
	{"operators.operatorframework.io.bundle.channels.v1", Channel},
	{"operators.operatorframework.io.bundle.channel.default.v1", Channel},
}

const generatedHeader = "# Generated by hack/gen-bundle (make bundle). DO NOT EDIT.\n"

func annotationsYAML() []byte {
	var b bytes.Buffer
	b.WriteString(generatedHeader)
	b.WriteString("annotations:\n")
	for _, a := range bundleAnnotations {
		fmt.Fprintf(&b, "  %s: %s\n", a[0], a[1])
	}
	return b.Bytes()
}

func dockerfile() []byte {
	var b bytes.Buffer
	b.WriteString(generatedHeader)
	b.WriteString("# The OLM bundle image of the Mizzen operator. Build it from the repository root:\n")
	b.WriteString("#   docker build -f bundle.Dockerfile -t <registry>/mizzen-operator-bundle:v<version> .\n")
	b.WriteString("FROM scratch\n\n")
	for _, a := range bundleAnnotations {
		fmt.Fprintf(&b, "LABEL %s=%s\n", a[0], a[1])
	}
	b.WriteString("\nCOPY bundle/manifests /manifests/\n")
	b.WriteString("COPY bundle/metadata /metadata/\n")
	return b.Bytes()
}

// readCRDs copies every CRD of config/crd/bases into the bundle's manifests
// and returns them parsed.
func readCRDs(o Options, files map[string][]byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	paths, err := filepath.Glob(o.path(crdDir + "/*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no CRD in %s", o.path(crdDir))
	}
	sort.Strings(paths)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if crd.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s holds a %s, not a CustomResourceDefinition", p, crd.Kind)
		}
		docs, err := splitYAML(data)
		if err != nil || len(docs) != 1 {
			return nil, fmt.Errorf("%s: want exactly one YAML document (%v)", p, err)
		}
		files[ManifestsDir+"/"+filepath.Base(p)] = data // byte for byte
		crds = append(crds, crd)
	}
	return crds, nil
}

// install is what config/default installs, in the CSV's terms.
type install struct {
	namespace          *unstructured.Unstructured
	namespaceTemplate  string // the Namespace as JSON, labels and all
	deployment         operatorsv1alpha1.StrategyDeploymentSpec
	deploymentSpec     map[string]any // the Deployment's spec as kustomize wrote it
	clusterPermissions []operatorsv1alpha1.StrategyDeploymentPermissions
	permissions        []operatorsv1alpha1.StrategyDeploymentPermissions
}

// kustomizeInstall renders config/default and turns it into an install
// strategy. Every object it renders must find a place in the bundle: a kind
// the bundle cannot carry fails the generation rather than being dropped.
func kustomizeInstall(o Options, crds []*apiextensionsv1.CustomResourceDefinition) (*install, error) {
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), o.path(kustomizeAt))
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", kustomizeAt, err)
	}
	var (
		namespaces      []*unstructured.Unstructured
		deployments     []*unstructured.Unstructured
		serviceAccounts = map[string]bool{}
		clusterRoles    = map[string][]rbacv1.PolicyRule{}
		roles           = map[string][]rbacv1.PolicyRule{} // namespace/name
		bindings        []*unstructured.Unstructured
	)
	bundledCRDs := map[string]bool{}
	for _, crd := range crds {
		bundledCRDs[crd.Name] = true
	}
	for _, res := range resMap.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
		switch gk := u.GroupVersionKind().GroupKind(); gk.String() {
		case "Namespace":
			namespaces = append(namespaces, u)
		case "CustomResourceDefinition.apiextensions.k8s.io":
			if !bundledCRDs[u.GetName()] {
				return nil, fmt.Errorf("%s renders %s, which is not in %s", kustomizeAt, id, crdDir)
			}
		case "ServiceAccount":
			serviceAccounts[u.GetNamespace()+"/"+u.GetName()] = true
		case "ClusterRole.rbac.authorization.k8s.io", "Role.rbac.authorization.k8s.io":
			var role rbacv1.ClusterRole // Role and ClusterRole share their rules' shape
			if err := fromUnstructured(u, &role); err != nil {
				return nil, fmt.Errorf("%s: %w", id, err)
			}
			if role.AggregationRule != nil {
				return nil, fmt.Errorf("%s: aggregated roles cannot be expressed in a CSV", id)
			}
			if gk.Kind == "ClusterRole" {
				clusterRoles[u.GetName()] = role.Rules
			} else {
				roles[u.GetNamespace()+"/"+u.GetName()] = role.Rules
			}
		case "ClusterRoleBinding.rbac.authorization.k8s.io", "RoleBinding.rbac.authorization.k8s.io":
			bindings = append(bindings, u)
		case "Deployment.apps":
			deployments = append(deployments, u)
		default:
			return nil, fmt.Errorf("%s renders %s, which the bundle cannot carry; teach hack/gen-bundle about it", kustomizeAt, id)
		}
	}
	if len(deployments) != 1 {
		return nil, fmt.Errorf("%s renders %d Deployments, want exactly the operator's", kustomizeAt, len(deployments))
	}
	u := deployments[0]
	ns := u.GetNamespace()
	if len(namespaces) != 1 || namespaces[0].GetName() != ns {
		return nil, fmt.Errorf("%s renders %d namespaces, want exactly the operator's, %q", kustomizeAt, len(namespaces), ns)
	}
	inst := &install{namespace: namespaces[0]}
	nsJSON, err := json.Marshal(namespaces[0].Object)
	if err != nil {
		return nil, err
	}
	inst.namespaceTemplate = string(nsJSON)

	if err := setManagerImage(u, o); err != nil {
		return nil, err
	}
	var dep appsv1.Deployment
	if err := fromUnstructured(u, &dep); err != nil {
		return nil, fmt.Errorf("Deployment %s: %w", u.GetName(), err)
	}
	sa := dep.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		return nil, fmt.Errorf("Deployment %s names no service account", u.GetName())
	}
	if !serviceAccounts[ns+"/"+sa] || len(serviceAccounts) != 1 {
		return nil, fmt.Errorf("%s renders service accounts %v, want exactly the operator's, %s/%s",
			kustomizeAt, sortedKeys(serviceAccounts), ns, sa)
	}
	inst.deployment = operatorsv1alpha1.StrategyDeploymentSpec{Name: dep.Name, Spec: dep.Spec, Label: dep.Labels}
	inst.deploymentSpec = u.Object["spec"].(map[string]any)

	// Every binding must grant the operator's service account a role the
	// bundle carries; OLM creates the service account, roles and bindings
	// from the permissions.
	sort.Slice(bindings, func(i, j int) bool {
		return bindings[i].GetKind()+"/"+bindings[i].GetName() < bindings[j].GetKind()+"/"+bindings[j].GetName()
	})
	var clusterRules, nsRules []rbacv1.PolicyRule
	usedRoles := map[string]bool{}
	for _, b := range bindings {
		id := b.GetKind() + " " + b.GetName()
		var rb rbacv1.RoleBinding // RoleBinding and ClusterRoleBinding share subjects and roleRef
		if err := fromUnstructured(b, &rb); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		if len(rb.Subjects) != 1 || rb.Subjects[0].Kind != rbacv1.ServiceAccountKind ||
			rb.Subjects[0].Name != sa || rb.Subjects[0].Namespace != ns {
			return nil, fmt.Errorf("%s: its only subject must be the operator's service account %s/%s", id, ns, sa)
		}
		var rules []rbacv1.PolicyRule
		var ok bool
		switch rb.RoleRef.Kind {
		case "ClusterRole":
			rules, ok = clusterRoles[rb.RoleRef.Name]
			usedRoles["ClusterRole/"+rb.RoleRef.Name] = true
		case "Role":
			if b.GetKind() == "RoleBinding" {
				rules, ok = roles[b.GetNamespace()+"/"+rb.RoleRef.Name]
				usedRoles["Role/"+b.GetNamespace()+"/"+rb.RoleRef.Name] = true
			}
		}
		if !ok {
			return nil, fmt.Errorf("%s refers to %s %s, which %s does not render", id, rb.RoleRef.Kind, rb.RoleRef.Name, kustomizeAt)
		}
		if b.GetKind() == "ClusterRoleBinding" {
			clusterRules = append(clusterRules, rules...)
			continue
		}
		if b.GetNamespace() != ns {
			return nil, fmt.Errorf("%s grants rights in namespace %q; a CSV only grants them in the operator's", id, b.GetNamespace())
		}
		nsRules = append(nsRules, rules...)
	}
	for name := range clusterRoles {
		if !usedRoles["ClusterRole/"+name] {
			return nil, fmt.Errorf("%s renders ClusterRole %s, bound to nothing", kustomizeAt, name)
		}
	}
	for key := range roles {
		if !usedRoles["Role/"+key] {
			return nil, fmt.Errorf("%s renders Role %s, bound to nothing", kustomizeAt, key)
		}
	}
	if len(clusterRules) > 0 {
		inst.clusterPermissions = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: clusterRules}}
	}
	if len(nsRules) > 0 {
		inst.permissions = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: nsRules}}
	}
	return inst, nil
}

// setManagerImage points the operator's container at the bundle's image and
// pins the mesh image the operator installs to the one relatedImages lists.
func setManagerImage(dep *unstructured.Unstructured, o Options) error {
	containers, _, err := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if err != nil {
		return err
	}
	found := false
	for _, c := range containers {
		cm, ok := c.(map[string]any)
		if !ok || cm["name"] != managerContainer {
			continue
		}
		found = true
		cm["image"] = o.OperatorImageRef()
		setEnv(cm, "MIZZEN_MESH_HUB", o.Hub, true)
		setEnv(cm, "MIZZEN_MESH_IMAGE", o.Image, o.Image != version.Image)
	}
	if !found {
		return fmt.Errorf("Deployment %s has no container %q", dep.GetName(), managerContainer)
	}
	return unstructured.SetNestedSlice(dep.Object, containers, "spec", "template", "spec", "containers")
}

// setEnv sets an environment variable of a container where it is already
// set, and adds it when add is true.
func setEnv(container map[string]any, name, value string, add bool) {
	env, _ := container["env"].([]any)
	for _, e := range env {
		if em, ok := e.(map[string]any); ok && em["name"] == name {
			em["value"] = value
			delete(em, "valueFrom")
			return
		}
	}
	if add {
		container["env"] = append(env, map[string]any{"name": name, "value": value})
	}
}

// almExamples returns the samples of config/samples as a JSON array, one
// MeshInstall per profile, the default profile's first (the console offers
// the first example as the starting point of a new MeshInstall).
func almExamples(o Options) (string, error) {
	paths, err := filepath.Glob(o.path(samplesDir + "/*.yaml"))
	if err != nil {
		return "", err
	}
	sort.Strings(paths)
	byProfile := map[string]map[string]any{}
	from := map[string]string{}
	for _, p := range paths {
		if filepath.Base(p) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		docs, err := splitYAML(data)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		for _, doc := range docs {
			mi := &v1alpha1.MeshInstall{}
			if err := yaml.UnmarshalStrict(doc, mi); err != nil {
				return "", fmt.Errorf("%s: not a valid MeshInstall: %w", p, err)
			}
			if mi.APIVersion != v1alpha1.GroupVersion.String() || mi.Kind != "MeshInstall" {
				return "", fmt.Errorf("%s: holds a %s %s, want only MeshInstalls", p, mi.APIVersion, mi.Kind)
			}
			name := mi.Spec.Profile
			if name == "" {
				name = v1alpha1.ProfileDefault
			}
			if other, dup := from[name]; dup {
				return "", fmt.Errorf("%s and %s are both samples of profile %q; keep one per profile", other, p, name)
			}
			obj := map[string]any{}
			if err := yaml.Unmarshal(doc, &obj); err != nil {
				return "", err
			}
			byProfile[name] = obj
			from[name] = p
		}
	}
	names := profile.Names()
	sort.SliceStable(names, func(i, j int) bool { return names[i] == v1alpha1.ProfileDefault && names[j] != v1alpha1.ProfileDefault })
	examples := make([]map[string]any, 0, len(names))
	for _, name := range names {
		ex, ok := byProfile[name]
		if !ok {
			return "", fmt.Errorf("profile %q has no sample in %s; add one", name, samplesDir)
		}
		examples = append(examples, ex)
		delete(byProfile, name)
	}
	for _, name := range sortedKeys(byProfile) {
		return "", fmt.Errorf("%s is a sample of profile %q, which does not exist", from[name], name)
	}
	out, err := json.MarshalIndent(examples, "", "  ")
	if err != nil {
		return "", err
	}
	return string(out), nil
}

func splitYAML(data []byte) ([][]byte, error) {
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, err
		}
		if len(obj) > 0 { // skip empty documents
			docs = append(docs, doc)
		}
	}
}

// RelatedImages lists every image the bundle's operator runs or installs:
// its own, and every container image of every chart, found by rendering each
// profile with every component, both kinds of gateway and every add-on on.
// Named after the components that run them, sorted by name.
func RelatedImages(o Options) ([]operatorsv1alpha1.RelatedImage, error) {
	users := map[string]map[string]bool{} // image -> components running it
	for _, p := range profile.Names() {
		spec, err := profile.Apply(everything(p))
		if err != nil {
			return nil, fmt.Errorf("profile %s: %w", p, err)
		}
		res, err := render.Render("related-images", spec, o.renderOptions())
		if err != nil {
			return nil, fmt.Errorf("rendering profile %s with everything on: %w", p, err)
		}
		for _, obj := range res.Objects {
			component := obj.GetLabels()[render.LabelComponent]
			for _, img := range containerImages(obj.Object) {
				if users[img] == nil {
					users[img] = map[string]bool{}
				}
				users[img][component] = true
			}
		}
	}
	names := map[string]string{o.OperatorImageRef(): operatorImageName} // image -> name
	taken := map[string]bool{operatorImageName: true}
	for _, img := range sortedKeys(users) {
		if _, ok := names[img]; ok {
			continue
		}
		base := operatorImageName + "-mesh"
		if img != o.MeshImage() {
			base = strings.NewReplacer(".", "-", "/", "-").Replace(sortedKeys(users[img])[0])
		}
		name := base
		for i := 2; taken[name]; i++ {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		names[img], taken[name] = name, true
	}
	images := make([]operatorsv1alpha1.RelatedImage, 0, len(names))
	for img, name := range names {
		images = append(images, operatorsv1alpha1.RelatedImage{Name: name, Image: img})
	}
	sort.Slice(images, func(i, j int) bool { return images[i].Name < images[j].Name })
	return images, nil
}

// everything is a MeshInstall spec of the given profile with every component,
// an ingress and an egress gateway and every add-on switched on.
func everything(profileName string) *v1alpha1.MeshInstallSpec {
	on := func() *bool { t := true; return &t }
	return &v1alpha1.MeshInstallSpec{
		Profile: profileName,
		Components: &v1alpha1.Components{
			Base:            &v1alpha1.BaseComponent{Enabled: on()},
			ControlPlane:    &v1alpha1.ControlPlaneComponent{WorkloadComponent: v1alpha1.WorkloadComponent{Enabled: on()}},
			Injector:        &v1alpha1.WorkloadComponent{Enabled: on()},
			IngressGateways: []v1alpha1.GatewayComponent{{Name: "istio-ingressgateway", Enabled: on()}},
			EgressGateways:  []v1alpha1.GatewayComponent{{Name: "istio-egressgateway", Enabled: on()}},
			Addons: &v1alpha1.Addons{
				Prometheus: &v1alpha1.PrometheusAddon{AddonComponent: v1alpha1.AddonComponent{Enabled: on()}},
				Grafana:    &v1alpha1.AddonComponent{Enabled: on()},
				Jaeger:     &v1alpha1.AddonComponent{Enabled: on()},
				Kiali:      &v1alpha1.AddonComponent{Enabled: on()},
			},
		},
	}
}

// containerImages returns the images of every container (init and ephemeral
// containers too) anywhere in an object: a Pod, a pod template of any
// workload kind, a CronJob's job template.
func containerImages(obj any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, key := range sortedKeys(v) {
				if key == "containers" || key == "initContainers" || key == "ephemeralContainers" {
					if list, ok := v[key].([]any); ok {
						for _, c := range list {
							if cm, ok := c.(map[string]any); ok {
								if img, ok := cm["image"].(string); ok && img != "" {
									out = append(out, img)
								}
							}
						}
					}
				}
				walk(v[key])
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(obj)
	return out
}

// marshalCSV writes the CSV as YAML: keys sorted, no status, no null
// timestamps, no empty sections, and the operator's Deployment spec exactly
// as kustomize rendered it (the typed one would add empty defaults).
func marshalCSV(csv *operatorsv1alpha1.ClusterServiceVersion, deploymentSpec map[string]any) ([]byte, error) {
	raw, err := json.Marshal(csv)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	dropEmpty(m)
	deployments, _, err := unstructured.NestedSlice(m, "spec", "install", "spec", "deployments")
	if err != nil || len(deployments) != 1 {
		return nil, fmt.Errorf("CSV install strategy: want one deployment, got %d (%v)", len(deployments), err)
	}
	deployments[0].(map[string]any)["spec"] = deploymentSpec
	if err := unstructured.SetNestedSlice(m, deployments, "spec", "install", "spec", "deployments"); err != nil {
		return nil, err
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte(generatedHeader), out...), nil
}

// dropEmpty removes nulls, empty objects and `enabled: false` cleanup
// sections the typed CSV marshals for its non-pointer structs.
func dropEmpty(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropEmpty(v)
			if len(v) == 0 || (k == "cleanup" && len(v) == 1 && v["enabled"] == false) {
				delete(m, k)
			}
		case []any:
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					dropEmpty(em)
				}
			}
		}
	}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Write writes the bundle and removes files of the bundle's folders that the
// generator no longer writes. It returns the paths it changed.
func Write(o Options) ([]string, error) {
	files, err := Generate(o)
	if err != nil {
		return nil, err
	}
	stale, extra, err := diff(o, files)
	if err != nil {
		return nil, err
	}
	for _, rel := range stale {
		p := o.path(rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, files[rel], 0o644); err != nil {
			return nil, err
		}
	}
	for _, rel := range extra {
		if err := os.Remove(o.path(rel)); err != nil {
			return nil, err
		}
	}
	changed := append(stale, extra...)
	sort.Strings(changed)
	return changed, nil
}

// Check returns the paths of the bundle that differ from what Generate
// writes: changed or missing files, and files the generator would remove.
// An empty result means the checked-in bundle is current.
func Check(o Options) ([]string, error) {
	files, err := Generate(o)
	if err != nil {
		return nil, err
	}
	stale, extra, err := diff(o, files)
	if err != nil {
		return nil, err
	}
	out := append(stale, extra...)
	sort.Strings(out)
	return out, nil
}

// diff compares the generated files with the disk: stale are generated files
// whose content differs or that are missing, extra are files in the bundle's
// folders that the generator does not write.
func diff(o Options, files map[string][]byte) (stale, extra []string, err error) {
	for _, rel := range sortedKeys(files) {
		have, err := os.ReadFile(o.path(rel))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		if err != nil || !bytes.Equal(have, files[rel]) {
			stale = append(stale, rel)
		}
	}
	for _, dir := range []string{ManifestsDir, MetadataDir} {
		err := filepath.WalkDir(o.path(dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			rel, err := filepath.Rel(o.Root, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if _, ok := files[rel]; !ok {
				extra = append(extra, rel)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return stale, extra, nil
}
