package argocd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	iofs "io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var applicationPath = filepath.Join("..", "..", "config", "argocd", "application.yaml")

// application is the part of Argo CD's Application that
// config/argocd/application.yaml uses; decoding it strictly catches a
// misspelt field, which Argo CD would silently ignore.
type application struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Project string `json:"project"`
		Source  struct {
			RepoURL        string `json:"repoURL"`
			TargetRevision string `json:"targetRevision"`
			Path           string `json:"path"`
			Kustomize      *struct {
				Patches []struct {
					Patch  string            `json:"patch"`
					Target map[string]string `json:"target,omitempty"`
				} `json:"patches"`
			} `json:"kustomize,omitempty"`
		} `json:"source"`
		Destination struct {
			Server    string `json:"server"`
			Namespace string `json:"namespace,omitempty"`
		} `json:"destination"`
		SyncPolicy struct {
			Automated struct {
				Prune    bool `json:"prune"`
				SelfHeal bool `json:"selfHeal"`
			} `json:"automated"`
			SyncOptions []string `json:"syncOptions"`
			Retry       *struct {
				Limit   int `json:"limit"`
				Backoff struct {
					Duration    string `json:"duration"`
					Factor      int    `json:"factor"`
					MaxDuration string `json:"maxDuration"`
				} `json:"backoff"`
			} `json:"retry,omitempty"`
		} `json:"syncPolicy"`
	} `json:"spec"`
}

func applications(t *testing.T) map[string]*application {
	t.Helper()
	data, err := os.ReadFile(applicationPath)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*application{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		app := &application{}
		if err := yaml.UnmarshalStrict(doc, app); err != nil {
			t.Fatalf("%s: %v", applicationPath, err)
		}
		if app.APIVersion != "argoproj.io/v1alpha1" || app.Kind != "Application" {
			t.Errorf("%s holds a %s %s", applicationPath, app.APIVersion, app.Kind)
		}
		out[app.Metadata.Name] = app
	}
	return out
}

// The example Applications apply server-side, never prune a MeshInstall,
// and protect the MeshInstall CRD; the operator's kustomize patch builds.
func TestApplicationExample(t *testing.T) {
	apps := applications(t)
	operator, mesh := apps["mizzen-operator"], apps["mesh"]
	if operator == nil || mesh == nil || len(apps) != 2 {
		t.Fatalf("%s: want the Applications mizzen-operator and mesh, got %v", applicationPath, slices.Sorted(maps.Keys(apps)))
	}
	for _, app := range []*application{operator, mesh} {
		if !slices.Contains(app.Spec.SyncPolicy.SyncOptions, "ServerSideApply=true") {
			t.Errorf("Application %s lacks the sync option ServerSideApply=true: %v", app.Metadata.Name, app.Spec.SyncPolicy.SyncOptions)
		}
	}
	if mesh.Spec.SyncPolicy.Automated.Prune {
		t.Errorf("Application mesh prunes: removing a MeshInstall from Git would uninstall the mesh")
	}
	if !mesh.Spec.SyncPolicy.Automated.SelfHeal {
		t.Errorf("Application mesh does not self-heal")
	}

	// The operator's Application, built as Argo CD builds it: config/default
	// with the Application's patches.
	if operator.Spec.Source.Path != "config/default" || operator.Spec.Source.Kustomize == nil {
		t.Fatalf("Application mizzen-operator: path %q, kustomize %v", operator.Spec.Source.Path, operator.Spec.Source.Kustomize)
	}
	// Argo CD adds the patches to the kustomization it builds; an overlay
	// of config/ copied into memory does the same.
	fs := filesys.MakeFsInMemory()
	root := filepath.Join("..", "..", "config")
	err := filepath.WalkDir(root, func(path string, d iofs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		return fs.WriteFile(filepath.Join("/config", rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	overlay := map[string]any{"resources": []string{filepath.Join("..", "config", "default")}}
	var patches []map[string]any
	for _, p := range operator.Spec.Source.Kustomize.Patches {
		patch := map[string]any{"patch": p.Patch}
		if p.Target != nil {
			patch["target"] = p.Target
		}
		patches = append(patches, patch)
	}
	overlay["patches"] = patches
	kustomization, err := yaml.Marshal(overlay)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.WriteFile("/overlay/kustomization.yaml", kustomization); err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/overlay")
	if err != nil {
		t.Fatalf("building config/default with the Application's patches: %v", err)
	}
	crds := 0
	for _, r := range resMap.Resources() {
		ann := r.GetAnnotations()
		protected := ann["argocd.argoproj.io/sync-options"]
		if r.GetKind() != "CustomResourceDefinition" {
			if protected != "" {
				t.Errorf("%s %s is annotated %q too", r.GetKind(), r.GetName(), protected)
			}
			continue
		}
		crds++
		if r.GetName() != "meshinstalls.install.mizzen.dev" {
			continue
		}
		opts := strings.Split(protected, ",")
		if !slices.Contains(opts, "Prune=false") || !slices.Contains(opts, "Delete=false") {
			t.Errorf("the MeshInstall CRD's sync options are %q, want Prune=false and Delete=false", protected)
		}
		if ann["controller-gen.kubebuilder.io/version"] == "" {
			t.Errorf("the patch dropped the CRD's other annotations: %v", ann)
		}
	}
	if crds != 1 {
		t.Errorf("config/default built with %d CRDs, want the MeshInstall CRD", crds)
	}
}
