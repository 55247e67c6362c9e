// Package rendercmd is the operator's render subcommand: it prints the
// objects a MeshInstall would apply, as istioctl manifest generate does.
package rendercmd

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/render"
	"github.com/mizzen-mesh/mizzen/internal/version"
)

// Run parses args (those after "render") and writes the manifests to stdout.
func Run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "a MeshInstall manifest to render (- for standard input)")
	prof := fs.String("profile", "", "render this profile (demo, default, minimal, empty) instead of a file; with -f, overrides spec.profile")
	hub := fs.String("hub", version.Hub, "image repository prefix of the mesh's image")
	tag := fs.String("tag", "", "mesh version (image tag); default: spec.version, else "+version.Version)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s render [-f meshinstall.yaml | --profile NAME] [flags]\n\nPrints the objects the MeshInstall would apply.\n\n", os.Args[0])
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" && *prof == "" {
		fs.Usage()
		return errors.New("render needs -f or --profile")
	}
	mi := &v1alpha1.MeshInstall{}
	mi.Name = "render"
	if *file != "" {
		data, err := readFile(*file)
		if err != nil {
			return err
		}
		if err := yaml.UnmarshalStrict(data, mi); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		if mi.Kind != "" && mi.Kind != "MeshInstall" {
			return fmt.Errorf("%s: kind is %q, want MeshInstall", *file, mi.Kind)
		}
	}
	if *prof != "" {
		mi.Spec.Profile = *prof
	}
	objects, err := Render(mi, render.Options{Version: pick(*tag, mi.Spec.Version, version.Version), Hub: *hub, Image: version.Image})
	if err != nil {
		return err
	}
	return write(stdout, objects)
}

// Render renders a MeshInstall as the operator would.
func Render(mi *v1alpha1.MeshInstall, opts render.Options) ([]map[string]any, error) {
	res, err := render.RenderUserSpec(mi.Name, &mi.Spec, opts)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(res.Objects))
	for _, o := range res.Objects {
		out = append(out, o.Object)
	}
	return out, nil
}

func write(w io.Writer, objects []map[string]any) error {
	var buf bytes.Buffer
	for _, o := range objects {
		data, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func readFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

func pick(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
