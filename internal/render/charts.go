package render

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/charts"
)

// chartCache loads each embedded chart once per process; charts are read-only
// after loading and safe to render concurrently.
var chartCache sync.Map // name -> *loadedChart

type loadedChart struct {
	once  sync.Once
	chart *chartv2.Chart
	crds  []*unstructured.Unstructured
	err   error
}

// loadChart returns the embedded chart called name and its parsed CRDs.
func loadChart(name string) (*loadedChart, error) {
	v, _ := chartCache.LoadOrStore(name, &loadedChart{})
	lc := v.(*loadedChart)
	lc.once.Do(func() {
		lc.chart, lc.err = loadFromFS(charts.FS, name)
		if lc.err != nil {
			return
		}
		for _, crd := range lc.chart.CRDObjects() {
			objs, err := decodeManifests(crd.File.Data)
			if err != nil {
				lc.err = fmt.Errorf("chart %s: %s: %w", name, crd.Filename, err)
				return
			}
			for _, o := range objs {
				// Labelled here, once: every render shares these objects.
				labels := o.GetLabels()
				if labels == nil {
					labels = map[string]string{}
				}
				labels[LabelManagedBy] = ManagedBy
				labels[LabelComponent] = name
				o.SetLabels(labels)
				chartCRDs.Store(o, true)
			}
			lc.crds = append(lc.crds, objs...)
		}
	})
	return lc, lc.err
}

func loadFromFS(fsys fs.FS, name string) (*chartv2.Chart, error) {
	sub, err := fs.Sub(fsys, name)
	if err != nil {
		return nil, err
	}
	var files []*archive.BufferedFile
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, path)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: path, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading chart %s: %w", name, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("chart %s is not embedded", name)
	}
	chrt, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", name, err)
	}
	return chrt, nil
}

// decodeManifests splits a multi-document YAML stream into objects, skipping
// empty documents. Whole numbers decode as int64, as Kubernetes expects.
func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := sigsyaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		obj := map[string]any{}
		if err := utiljson.Unmarshal(js, &obj); err != nil {
			return nil, err
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("a document has no kind or apiVersion")
		}
		out = append(out, u)
	}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

// chartCRDs holds the CRD objects loaded from charts' crds/ folders, which
// every render shares read-only.
var chartCRDs sync.Map // *unstructured.Unstructured -> true

func isChartCRD(o *unstructured.Unstructured) bool {
	_, ok := chartCRDs.Load(o)
	return ok
}

var (
	chartsDigestOnce  sync.Once
	chartsDigestValue string
)

// chartsDigest identifies the embedded charts, computed once.
func chartsDigest() string {
	chartsDigestOnce.Do(func() {
		h := sha256.New()
		_ = fs.WalkDir(charts.FS, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := fs.ReadFile(charts.FS, path)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s %d\n", path, len(data))
			h.Write(data)
			return nil
		})
		chartsDigestValue = hex.EncodeToString(h.Sum(nil))
	})
	return chartsDigestValue
}
