// Package project proves that the kubebuilder CLI accepts the repository's
// PROJECT file (hack/check-project.sh, with kubebuilder pinned in
// hack/tools/kubebuilder), that the check really rejects broken files, and
// that PROJECT agrees with the CRDs in config/crd/bases.
//
// The first run builds kubebuilder into ~/.cache/mizzen (about a minute on
// 2 cores); later runs take a fraction of a second. With -v the script's
// progress is shown as it happens.
package project

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "PROJECT")); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
	return root
}

// checkProject runs hack/check-project.sh, on projectFile if not empty, and
// returns its combined output and whether it succeeded.
func checkProject(t *testing.T, projectFile string) (string, bool) {
	t.Helper()
	root := repoRoot(t)
	args := []string{filepath.Join(root, "hack", "check-project.sh")}
	if projectFile != "" {
		args = append(args, projectFile)
	}
	cmd := exec.Command("bash", args...)
	cmd.Dir = root
	var out bytes.Buffer
	var w io.Writer = &out
	if testing.Verbose() {
		w = io.MultiWriter(&out, os.Stderr)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	if err != nil {
		if _, exited := err.(*exec.ExitError); !exited {
			t.Fatalf("running %v: %v\n%s", args, err, out.String())
		}
	}
	return out.String(), err == nil
}

func TestKubebuilderAcceptsPROJECT(t *testing.T) {
	out, ok := checkProject(t, "")
	if !ok {
		t.Fatalf("hack/check-project.sh failed: kubebuilder does not accept PROJECT as it is:\n%s", out)
	}
	t.Log(out)
}

// TestCheckRejectsBrokenPROJECT proves that the check is no rubber stamp:
// each broken copy of PROJECT must fail it, for the stated reason.
func TestCheckRejectsBrokenPROJECT(t *testing.T) {
	root := repoRoot(t)
	orig, err := os.ReadFile(filepath.Join(root, "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	project := string(orig)
	replace := func(old, new string) string {
		t.Helper()
		if !strings.Contains(project, old) {
			t.Fatalf("PROJECT has no %q to corrupt", old)
		}
		return strings.Replace(project, old, new, 1)
	}
	cases := []struct {
		name, content, want string
	}{
		{"malformed YAML", replace("\nlayout:\n", "\nlayout: [\n"), "unable to determine config version"},
		{"unknown layout", replace("go.kubebuilder.io/v4", "go.kubebuilder.io/v99"), `no plugin could be resolved with key "go.kubebuilder.io/v99"`},
		{"unknown field", replace("\ndomain:", "\ndomian:"), `unknown field "domian"`},
		{"mistyped field", replace("controller: true", "controller: yes-please"), "cannot unmarshal string"},
		{"unsupported project version", replace(`version: "3"`, `version: "2"`), "version 2 is not supported"},
		{"namespaced: false spelled out", replace("crdVersion: v1\n", "crdVersion: v1\n    namespaced: false\n"), "-    namespaced: false"},
		{"multigroup layout", project + "multigroup: true\n", "-multigroup: true"},
		{"other cliVersion", replace("cliVersion: ", "cliVersion: 0.0.0-"), "cliVersion is"},
		{"empty file", "", "version 0 is not supported"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("PROJECT-%d", i))
			if err := os.WriteFile(file, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			out, ok := checkProject(t, file)
			if ok {
				t.Fatalf("hack/check-project.sh accepted a PROJECT with %s:\n%s", c.name, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("hack/check-project.sh failed without saying %q:\n%s", c.want, out)
			}
		})
	}
}

type projectFile struct {
	Resources []struct {
		Group, Domain, Version, Kind string
		API                          *struct {
			Namespaced bool `json:"namespaced"`
		} `json:"api"`
	} `json:"resources"`
}

type crd struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name string `json:"name"`
		} `json:"versions"`
	} `json:"spec"`
}

// scopeMismatches compares PROJECT's resources with the CRDs generated from
// the API types: kubebuilder records a namespaced API as `namespaced: true`
// and a cluster-scoped one by leaving the field out.
func scopeMismatches(projectYAML []byte, crds map[string]crd) ([]string, error) {
	var p projectFile
	if err := yaml.Unmarshal(projectYAML, &p); err != nil {
		return nil, err
	}
	var problems []string
	seen := map[string]bool{}
	for _, r := range p.Resources {
		if r.API == nil {
			continue // e.g. a controller for an external API
		}
		gk := r.Kind + "." + r.Group + "." + r.Domain
		seen[gk] = true
		c, ok := crds[gk]
		if !ok {
			problems = append(problems, fmt.Sprintf("PROJECT has API %s %s, config/crd/bases has no CRD for it", gk, r.Version))
			continue
		}
		namespaced := c.Spec.Scope == "Namespaced"
		if r.API.Namespaced != namespaced {
			want := "no namespaced field"
			if namespaced {
				want = "api.namespaced: true"
			}
			problems = append(problems, fmt.Sprintf("%s: the CRD's scope is %s, so PROJECT must have %s", gk, c.Spec.Scope, want))
		}
		hasVersion := false
		for _, v := range c.Spec.Versions {
			hasVersion = hasVersion || v.Name == r.Version
		}
		if !hasVersion {
			problems = append(problems, fmt.Sprintf("%s: the CRD serves no version %s", gk, r.Version))
		}
	}
	for gk := range crds {
		if !seen[gk] {
			problems = append(problems, fmt.Sprintf("config/crd/bases has a CRD for %s, PROJECT has no such API", gk))
		}
	}
	return problems, nil
}

func TestPROJECTMatchesCRDs(t *testing.T) {
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no CRDs in config/crd/bases")
	}
	crds := map[string]crd{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c crd
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		crds[c.Spec.Names.Kind+"."+c.Spec.Group] = c
	}
	project, err := os.ReadFile(filepath.Join(root, "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	problems, err := scopeMismatches(project, crds)
	if err != nil {
		t.Fatalf("PROJECT: %v", err)
	}
	for _, p := range problems {
		t.Error(p)
	}

	if len(problems) != 0 {
		return
	}
	// The comparison itself must notice a scope that PROJECT gets wrong.
	for gk, c := range crds {
		flipped := c
		if c.Spec.Scope == "Namespaced" {
			flipped.Spec.Scope = "Cluster"
		} else {
			flipped.Spec.Scope = "Namespaced"
		}
		crds[gk] = flipped
		if problems, _ := scopeMismatches(project, crds); len(problems) == 0 {
			t.Errorf("a %s CRD for %s went unnoticed", flipped.Spec.Scope, gk)
		}
		crds[gk] = c
	}
}
