// Package apply server-side-applies rendered objects with one field manager
// (CRDs and namespaces first), prunes what is no longer rendered, and
// remembers what it applied so that an unchanged render against an unchanged
// cluster costs no API request at all.
package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/internal/render"
)

// FieldManager is the one field manager every apply uses.
const FieldManager = "mizzen-operator"

// Applier applies and prunes the objects of MeshInstalls.
type Applier struct {
	manager *ssa.ResourceManager
	direct  client.Client
	cached  client.Reader

	mu      sync.Mutex
	applied map[types.UID]*appliedSet
}

// appliedSet is what the last successful apply of one MeshInstall left in the
// cluster: the render digest and each object's fingerprint right after.
type appliedSet struct {
	digest       string
	fingerprints map[string]string
	// observed is each object as the apply left it in the API server:
	// health read from a cache holding anything older is not yet health.
	observed map[string]Observed
}

// Observed identifies one state of an object: its UID and generation.
type Observed struct {
	UID        types.UID
	Generation int64
}

// New returns an Applier. direct must read and write the API server without
// a cache; cached is the informer cache holding the managed objects (their
// metadata is enough).
func New(direct client.Client, cached client.Reader) *Applier {
	poller := polling.NewStatusPoller(direct, direct.RESTMapper(), polling.Options{})
	m := ssa.NewResourceManager(direct, poller, ssa.Owner{Field: FieldManager, Group: "install.mizzen.dev"})
	m.SetConcurrency(4)
	return &Applier{manager: m, direct: direct, cached: cached, applied: map[types.UID]*appliedSet{}}
}

// UpToDate reports whether objects, rendered to digest, are what the last
// apply for owner left and the cache shows none of them changed or missing
// since. It issues no API request: it reads the cache only.
func (a *Applier) UpToDate(ctx context.Context, owner types.UID, digest string, objects []*unstructured.Unstructured) bool {
	a.mu.Lock()
	set := a.applied[owner]
	a.mu.Unlock()
	if set == nil || set.digest != digest {
		return false
	}
	for _, o := range objects {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := a.cached.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			return false
		}
		if fp, ok := set.fingerprints[render.ObjectKey(o)]; !ok || fp != fingerprint(live) {
			return false
		}
	}
	return true
}

// Applied returns the UID and generation o had in the API server right after
// owner's last apply, if that apply included it.
func (a *Applier) Applied(owner types.UID, o *unstructured.Unstructured) (Observed, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	set := a.applied[owner]
	if set == nil {
		return Observed{}, false
	}
	ob, ok := set.observed[render.ObjectKey(o)]
	return ob, ok
}

// Forget drops what is remembered of owner's last apply.
func (a *Applier) Forget(owner types.UID) {
	a.mu.Lock()
	delete(a.applied, owner)
	a.mu.Unlock()
}

// Apply server-side-applies objects in stages (CRDs, namespaces and cluster
// roles first, waiting until they are established), changing only what
// differs, and remembers the result for UpToDate.
//
// Only objects the apply found already as rendered are remembered, with the
// fingerprint read before the comparison: a change made by anyone after that
// read shows as a different fingerprint later. Objects it had to change are
// compared again on the next pass, which then remembers them.
func (a *Applier) Apply(ctx context.Context, owner types.UID, digest string, objects []*unstructured.Unstructured) (*ssa.ChangeSet, error) {
	a.Forget(owner)
	before := make(map[string]string, len(objects))
	observed := make(map[string]Observed, len(objects))
	toApply := make([]*unstructured.Unstructured, len(objects))
	for i, o := range objects {
		toApply[i] = o.DeepCopy()
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		err := a.direct.Get(ctx, client.ObjectKeyFromObject(o), live)
		switch {
		case err == nil:
			before[render.ObjectKey(o)] = fingerprint(live)
			observed[render.ObjectKey(o)] = Observed{UID: live.GetUID(), Generation: live.GetGeneration()}
		case !apierrors.IsNotFound(err) && !isNoMatch(err):
			return nil, fmt.Errorf("reading %s: %w", render.ObjectKey(o), err)
		}
	}
	opts := ssa.DefaultApplyOptions()
	opts.WaitInterval = 500 * time.Millisecond
	opts.WaitTimeout = 2 * time.Minute
	// Roles go before everything namespaced: the API server authorizes a
	// RoleBinding by reading its Role, so binding a Role that does not exist
	// yet fails for an operator that holds no bind permission (and it should
	// hold none). ClusterRoles already go first, with CRDs and namespaces.
	opts.CustomStageKinds = map[schema.GroupKind]struct{}{{Group: rbacv1.GroupName, Kind: "Role"}: {}}
	cs, err := a.manager.ApplyAllStaged(ctx, toApply, opts)
	if err != nil {
		return cs, err
	}
	fps := make(map[string]string, len(objects))
	byKey := make(map[string]*unstructured.Unstructured, len(objects))
	for _, o := range objects {
		byKey[render.ObjectKey(o)] = o
	}
	for _, e := range cs.Entries {
		key := e.ObjMetadata.GroupKind.Group + "/" + e.ObjMetadata.GroupKind.Kind + "/" + e.ObjMetadata.Namespace + "/" + e.ObjMetadata.Name
		if e.Action != ssa.UnchangedAction {
			// Created or changed: read back the UID and generation the
			// API server now holds.
			o, ok := byKey[key]
			if !ok {
				continue
			}
			live := &metav1.PartialObjectMetadata{}
			live.SetGroupVersionKind(o.GroupVersionKind())
			if err := a.direct.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
				return cs, fmt.Errorf("reading back %s: %w", key, err)
			}
			observed[key] = Observed{UID: live.GetUID(), Generation: live.GetGeneration()}
			continue
		}
		if fp, ok := before[key]; ok {
			fps[key] = fp
		}
	}
	a.mu.Lock()
	a.applied[owner] = &appliedSet{digest: digest, fingerprints: fps, observed: observed}
	a.mu.Unlock()
	return cs, nil
}

// Delete deletes the objects that still carry owner's labels (shared
// objects: the operator's label) and leaves every other object alone. It does
// not wait.
func (a *Applier) Delete(ctx context.Context, ownerName string, objects []*unstructured.Unstructured) (*ssa.ChangeSet, error) {
	cs := ssa.NewChangeSet()
	var owned, shared []*unstructured.Unstructured
	for _, o := range objects {
		if render.Shared(o) {
			shared = append(shared, o)
		} else {
			owned = append(owned, o)
		}
	}
	for _, group := range []struct {
		objects   []*unstructured.Unstructured
		selection map[string]string
	}{
		{owned, map[string]string{render.LabelOwner: ownerName, render.LabelManagedBy: render.ManagedBy}},
		{shared, map[string]string{render.LabelManagedBy: render.ManagedBy}},
	} {
		if len(group.objects) == 0 {
			continue
		}
		opts := ssa.DefaultDeleteOptions()
		opts.Inclusions = group.selection
		part, err := a.manager.DeleteAll(ctx, group.objects, opts)
		if part != nil {
			cs.Append(part.Entries)
		}
		if err != nil {
			return cs, err
		}
	}
	return cs, nil
}

// Remaining returns the objects of refs that still exist and carry owner's
// labels, read from the API server.
func (a *Applier) Remaining(ctx context.Context, ownerName string, refs []*unstructured.Unstructured) ([]string, error) {
	var left []string
	for _, r := range refs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(r.GroupVersionKind())
		err := a.direct.Get(ctx, client.ObjectKeyFromObject(r), live)
		if apierrors.IsNotFound(err) || isNoMatch(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if live.GetLabels()[render.LabelManagedBy] != render.ManagedBy ||
			(!render.Shared(r) && live.GetLabels()[render.LabelOwner] != ownerName) {
			continue
		}
		left = append(left, render.ObjectKey(r))
	}
	sort.Strings(left)
	return left, nil
}

// isNoMatch reports a kind the API server does not serve (its CRD is gone).
func isNoMatch(err error) bool {
	return err != nil && (meta.IsNoMatchError(err) || discovery.IsGroupDiscoveryFailedError(errors.Unwrap(err)))
}

// fingerprint changes whenever an object's spec, labels or annotations
// change, or it is recreated; status-only updates of objects that have a
// generation leave it alone.
func fingerprint(o *metav1.PartialObjectMetadata) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", o.GetUID())
	if g := o.GetGeneration(); g > 0 {
		fmt.Fprintf(h, "g%d\n", g)
	} else {
		fmt.Fprintf(h, "rv%s\n", o.GetResourceVersion())
	}
	writeSorted(h, o.GetLabels())
	writeSorted(h, o.GetAnnotations())
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func writeSorted(h interface{ Write([]byte) (int, error) }, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, m[k])
	}
	h.Write([]byte{0})
}
