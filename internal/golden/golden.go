// Package golden compares test output with files under testdata/, semantically
// for YAML (key order and formatting do not matter). Run the tests with
// -update to rewrite the files from the current output.
package golden

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

var update = flag.Bool("update", false, "rewrite golden files from the current output")

// AssertYAML compares a YAML stream (one or more documents) with the golden
// file at path, document by document and value by value.
func AssertYAML(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run the test with -update to create it): %v", err)
	}
	gotDocs, err := decode(got)
	if err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
	wantDocs, err := decode(want)
	if err != nil {
		t.Fatalf("%s is not YAML: %v", path, err)
	}
	if len(gotDocs) != len(wantDocs) {
		t.Fatalf("%s: %d documents rendered, golden file has %d (run with -update if the change is intended)", path, len(gotDocs), len(wantDocs))
	}
	for i := range gotDocs {
		if !reflect.DeepEqual(gotDocs[i], wantDocs[i]) {
			t.Errorf("%s: document %d differs from the golden file (run with -update if intended)\n got: %v\nwant: %v", path, i, gotDocs[i], wantDocs[i])
		}
	}
}

func decode(data []byte) ([]any, error) {
	var docs []any
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var doc any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			return nil, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}
