// Package charts embeds the Helm charts the Mizzen operator renders in-process.
//
// Each top-level folder is one chart (apiVersion v2). The operator renders a
// chart with Release.Name set to the component id and Release.Namespace set to
// the mesh namespace, and applies the result itself: there are no hooks, no
// release Secrets and no lookups.
package charts

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// FS holds every chart folder. The all: prefix keeps files whose names start
// with "_" or "." (templates/_helpers.tpl).
//
//go:embed all:base all:controlplane all:injector all:gateway all:prometheus all:grafana all:jaeger all:kiali
var FS embed.FS

// Names lists the charts in FS, in the order a full install applies them.
var Names = []string{
	"base",
	"controlplane",
	"injector",
	"gateway",
	"prometheus",
	"grafana",
	"jaeger",
	"kiali",
}

// Files returns the files of one chart with paths relative to the chart
// folder, as Helm's loader expects them.
func Files(name string) ([]*archive.BufferedFile, error) {
	sub, err := fs.Sub(FS, name)
	if err != nil {
		return nil, err
	}
	var files []*archive.BufferedFile
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: path.Clean(p), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading chart %q: %w", name, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("chart %q not found", name)
	}
	return files, nil
}

// Load returns one embedded chart, loaded with Helm's v2 chart loader.
func Load(name string) (*chart.Chart, error) {
	files, err := Files(name)
	if err != nil {
		return nil, err
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading chart %q: %w", name, err)
	}
	return c, nil
}
