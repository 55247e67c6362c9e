// Package profile layers a user's MeshInstall spec over the profile it names.
// Precedence is chart defaults < profile < user spec: the profile is a spec
// fragment, and every field the user sets wins over the profile's; the charts'
// own defaults fill in what neither sets, later, at render time.
package profile

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/profiles"
)

// Names lists the profiles that exist, sorted.
func Names() []string {
	entries, err := fs.Glob(profiles.FS, "*.yaml")
	if err != nil {
		panic(err) // the pattern is constant and valid
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e, ".yaml"))
	}
	sort.Strings(names)
	return names
}

// Load returns the spec fragment of a profile.
func Load(name string) (*v1alpha1.MeshInstallSpec, error) {
	data, err := fs.ReadFile(profiles.FS, name+".yaml")
	if err != nil {
		return nil, fmt.Errorf("unknown profile %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	spec := &v1alpha1.MeshInstallSpec{}
	if err := yaml.UnmarshalStrict(data, spec); err != nil {
		return nil, fmt.Errorf("profile %q: %w", name, err)
	}
	return spec, nil
}

// Apply returns the effective spec: the user's spec layered over its profile
// (spec.profile, "default" when empty).
func Apply(user *v1alpha1.MeshInstallSpec) (*v1alpha1.MeshInstallSpec, error) {
	name := user.Profile
	if name == "" {
		name = v1alpha1.ProfileDefault
	}
	base, err := Load(name)
	if err != nil {
		return nil, err
	}
	merged, err := Merge(base, user)
	if err != nil {
		return nil, err
	}
	merged.Profile = name
	return merged, nil
}

// listKeys names the lists whose items are merged by a key instead of being
// replaced whole, by their path in the spec.
var listKeys = map[string]string{
	"components.ingressGateways": "name",
	"components.egressGateways":  "name",
}

// Merge layers over on top of base and returns a new spec. Maps merge key by
// key, gateways merge by name (a gateway over names one of the base's changes
// it, another name is added), and every other value in over replaces base's.
func Merge(base, over *v1alpha1.MeshInstallSpec) (*v1alpha1.MeshInstallSpec, error) {
	b, err := ToMap(base)
	if err != nil {
		return nil, err
	}
	o, err := ToMap(over)
	if err != nil {
		return nil, err
	}
	merged := mergeMaps(b, o, "")
	data, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	out := &v1alpha1.MeshInstallSpec{}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("merging profile and spec: %w", err)
	}
	return out, nil
}

// ToMap turns a value into its JSON object form (nil is an empty map).
func ToMap(v any) (map[string]any, error) {
	if spec, ok := v.(*v1alpha1.MeshInstallSpec); ok && spec == nil {
		return map[string]any{}, nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// MergeMaps deep-merges over into base (both left unchanged) and returns the
// result; lists are replaced.
func MergeMaps(base, over map[string]any) map[string]any {
	return mergeMaps(base, over, "")
}

func mergeMaps(base, over map[string]any, path string) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, ov := range over {
		p := k
		if path != "" {
			p = path + "." + k
		}
		bv, ok := out[k]
		if !ok {
			out[k] = ov
			continue
		}
		switch o := ov.(type) {
		case map[string]any:
			if bm, ok := bv.(map[string]any); ok {
				out[k] = mergeMaps(bm, o, p)
				continue
			}
		case []any:
			if key, ok := listKeys[p]; ok {
				if bl, ok := bv.([]any); ok {
					out[k] = mergeListByKey(bl, o, key, p)
					continue
				}
			}
		}
		out[k] = ov
	}
	return out
}

// mergeListByKey merges items of over into base by their key field, keeping
// base's order and appending the new ones in over's order.
func mergeListByKey(base, over []any, key, path string) []any {
	out := make([]any, 0, len(base)+len(over))
	index := map[any]int{}
	for _, item := range base {
		if m, ok := item.(map[string]any); ok {
			index[m[key]] = len(out)
		}
		out = append(out, item)
	}
	for _, item := range over {
		m, ok := item.(map[string]any)
		if !ok {
			out = append(out, item)
			continue
		}
		if i, found := index[m[key]]; found {
			if bm, ok := out[i].(map[string]any); ok {
				out[i] = mergeMaps(bm, m, path)
				continue
			}
		}
		index[m[key]] = len(out)
		out = append(out, item)
	}
	return out
}
