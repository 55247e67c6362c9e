// Package inventory records which objects a MeshInstall applied, so that a
// later apply can tell exactly which ones it no longer renders.
package inventory

import (
	"fmt"
	"sort"

	"github.com/fluxcd/cli-utils/pkg/object"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
)

// New returns the inventory of objects, sorted by ID.
func New(objects []*unstructured.Unstructured) *v1alpha1.ResourceInventory {
	inv := &v1alpha1.ResourceInventory{Entries: make([]v1alpha1.ResourceRef, 0, len(objects))}
	for _, o := range objects {
		inv.Entries = append(inv.Entries, v1alpha1.ResourceRef{
			ID:      object.UnstructuredToObjMetadata(o).String(),
			Version: o.GroupVersionKind().Version,
		})
	}
	sort.Slice(inv.Entries, func(i, j int) bool { return inv.Entries[i].ID < inv.Entries[j].ID })
	return inv
}

// Stale returns the objects in old that are not in current, as references
// (group, version, kind, namespace and name only).
func Stale(old, current *v1alpha1.ResourceInventory) ([]*unstructured.Unstructured, error) {
	if old == nil {
		return nil, nil
	}
	keep := map[string]bool{}
	if current != nil {
		for _, e := range current.Entries {
			keep[e.ID] = true
		}
	}
	var stale []*unstructured.Unstructured
	for _, e := range old.Entries {
		if keep[e.ID] {
			continue
		}
		u, err := Ref(e)
		if err != nil {
			return nil, err
		}
		stale = append(stale, u)
	}
	return stale, nil
}

// Objects returns references to every object of an inventory.
func Objects(inv *v1alpha1.ResourceInventory) ([]*unstructured.Unstructured, error) {
	return Stale(inv, nil)
}

// Ref turns an inventory entry into an object reference.
func Ref(e v1alpha1.ResourceRef) (*unstructured.Unstructured, error) {
	m, err := object.ParseObjMetadata(e.ID)
	if err != nil {
		return nil, fmt.Errorf("inventory entry %q: %w", e.ID, err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: m.GroupKind.Group, Version: e.Version, Kind: m.GroupKind.Kind})
	u.SetNamespace(m.Namespace)
	u.SetName(m.Name)
	return u, nil
}

// Union returns the entries of a and b, each ID once (a's version wins).
func Union(a, b *v1alpha1.ResourceInventory) *v1alpha1.ResourceInventory {
	out := &v1alpha1.ResourceInventory{Entries: []v1alpha1.ResourceRef{}}
	seen := map[string]bool{}
	for _, inv := range []*v1alpha1.ResourceInventory{a, b} {
		if inv == nil {
			continue
		}
		for _, e := range inv.Entries {
			if !seen[e.ID] {
				seen[e.ID] = true
				out.Entries = append(out.Entries, e)
			}
		}
	}
	sort.Slice(out.Entries, func(i, j int) bool { return out.Entries[i].ID < out.Entries[j].ID })
	return out
}
