// Command gen-bundle writes Mizzen's OLM bundle, the package OperatorHub
// installs the operator from: bundle/manifests (the ClusterServiceVersion and
// the MeshInstall CRD), bundle/metadata/annotations.yaml and
// bundle.Dockerfile. Everything comes from the repository: config/default
// (rendered with kustomize), config/crd/bases, config/samples, the embedded
// charts and profiles, and internal/version.
//
// Usage (from the repository root):
//
//	go run ./hack/gen-bundle          # regenerate the bundle (make bundle)
//	go run ./hack/gen-bundle -check   # fail naming every stale bundle file
//
// The image defaults to internal/version's Hub/Image:Version; -version, -hub
// and -image change it for both the operator and the mesh (they run the same
// image), -operator-image replaces the operator container's image only.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/mizzen-mesh/mizzen/hack/gen-bundle/bundlegen"
	"github.com/mizzen-mesh/mizzen/internal/version"
)

func main() {
	o := bundlegen.DefaultOptions(".")
	check := flag.Bool("check", false, "write nothing; exit 1 naming every bundle file that differs from what would be generated")
	flag.StringVar(&o.Root, "root", o.Root, "repository root")
	flag.StringVar(&o.Version, "version", version.Version, "bundle version: the operator's and the mesh's")
	flag.StringVar(&o.Hub, "hub", version.Hub, "image repository prefix of the operator and mesh image")
	flag.StringVar(&o.Image, "image", version.Image, "name of the operator and mesh image")
	flag.StringVar(&o.OperatorImage, "operator-image", "", "full image reference of the operator container (default <hub>/<image>:<version>)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gen-bundle: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if _, err := os.Stat(o.Root + "/go.mod"); err != nil {
		fmt.Fprintf(os.Stderr, "gen-bundle: %s is not the repository root (run it from there, or pass -root)\n", o.Root)
		os.Exit(2)
	}

	if *check {
		stale, err := bundlegen.Check(o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gen-bundle: %v\n", err)
			os.Exit(1)
		}
		if len(stale) > 0 {
			fmt.Fprintf(os.Stderr, "the OLM bundle is stale (run 'make bundle' and commit the result):\n  %s\n", strings.Join(stale, "\n  "))
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "the OLM bundle is up to date")
		return
	}
	changed, err := bundlegen.Write(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen-bundle: %v\n", err)
		os.Exit(1)
	}
	if len(changed) == 0 {
		fmt.Fprintln(os.Stderr, "the OLM bundle is up to date")
		return
	}
	for _, p := range changed {
		fmt.Fprintln(os.Stderr, "wrote", p)
	}
}
