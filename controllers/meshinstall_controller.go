// Package controllers holds the operator's reconcilers.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/apply"
	"github.com/mizzen-mesh/mizzen/internal/inventory"
	"github.com/mizzen-mesh/mizzen/internal/profile"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// Finalizer holds a MeshInstall until what it installed is deleted.
const Finalizer = "install.mizzen.dev/finalizer"

// DefaultRequeueInterval is how often a MeshInstall whose components are
// still starting is looked at again, besides the events of its objects.
const DefaultRequeueInterval = 5 * time.Second

// MeshInstallReconciler turns a MeshInstall into a running mesh.
type MeshInstallReconciler struct {
	// Client reads from the cache and writes to the API server.
	client.Client
	// Applier applies and prunes the rendered objects.
	Applier *apply.Applier
	// Events records Kubernetes events on MeshInstalls.
	Events events.EventRecorder
	// Render holds the operator's image and version.
	Render render.Options
	// Renderer renders, reusing the last result while the inputs are unchanged.
	Renderer render.Renderer
	// RequeueInterval is DefaultRequeueInterval when zero.
	RequeueInterval time.Duration
}

// +kubebuilder:rbac:groups=install.mizzen.dev,resources=meshinstalls,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=install.mizzen.dev,resources=meshinstalls/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=install.mizzen.dev,resources=meshinstalls/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the reconciler: it watches MeshInstalls and the
// metadata of every object they manage.
func (r *MeshInstallReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("meshinstall").
		For(&v1alpha1.MeshInstall{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		// A deleted MeshInstall may free the revision another one waits for.
		Watches(&v1alpha1.MeshInstall{}, handler.EnqueueRequestsFromMapFunc(r.others),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return false },
				UpdateFunc:  func(event.UpdateEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
			})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2})
	for _, kind := range ManagedKinds() {
		b = b.WatchesMetadata(kind, handler.EnqueueRequestsFromMapFunc(r.owners))
	}
	return b.Complete(r)
}

// owners maps a managed object to the MeshInstall that owns it; a shared
// object (CRD, mesh namespace) to every MeshInstall.
func (r *MeshInstallReconciler) owners(ctx context.Context, o client.Object) []reconcile.Request {
	if name := o.GetLabels()[render.LabelOwner]; name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
	}
	return r.others(ctx, nil)
}

// others lists every MeshInstall but skip.
func (r *MeshInstallReconciler) others(ctx context.Context, skip client.Object) []reconcile.Request {
	list := &v1alpha1.MeshInstallList{}
	if err := r.List(ctx, list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing MeshInstalls")
		return nil
	}
	var reqs []reconcile.Request
	for _, mi := range list.Items {
		if skip == nil || mi.Name != skip.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: mi.Name}})
		}
	}
	return reqs
}

// Reconcile reads a MeshInstall, does the work, and writes its status once.
func (r *MeshInstallReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &v1alpha1.MeshInstall{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := ctrl.LoggerFrom(ctx).WithValues("meshinstall", klog.KObj(obj))
	ctx = ctrl.LoggerInto(ctx, log)
	before := obj.DeepCopy()

	var out outcome
	finalized := false
	defer func() {
		if finalized {
			return
		}
		summarize(obj, out)
		r.readyChangedEvent(before, obj)
		if err := r.patchStatus(ctx, before, obj); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	if !obj.DeletionTimestamp.IsZero() {
		result, out, finalized = r.finalize(ctx, obj)
		return result, returnedError(out.err)
	}

	if !controllerutil.ContainsFinalizer(obj, Finalizer) {
		patch := client.MergeFrom(obj.DeepCopy())
		controllerutil.AddFinalizer(obj, Finalizer)
		if err := r.Patch(ctx, obj, patch); err != nil {
			out.err = transient(ReasonReconciliationFailed, fmt.Errorf("adding finalizer: %w", err))
			return ctrl.Result{}, out.err
		}
		before = obj.DeepCopy()
	}

	result, out = r.reconcile(ctx, obj)
	return result, returnedError(out.err)
}

// returnedError turns an outcome's error into what Reconcile returns:
// stalled errors are terminal (no retry until something changes), others are
// retried with backoff.
func returnedError(err error) error {
	var se *stalledError
	if errors.As(err, &se) {
		return reconcile.TerminalError(err)
	}
	return err
}

// reconcile installs the mesh: resolve the spec, render, apply, prune, and
// report health.
func (r *MeshInstallReconciler) reconcile(ctx context.Context, obj *v1alpha1.MeshInstall) (ctrl.Result, outcome) {
	log := ctrl.LoggerFrom(ctx)

	// 1. The effective spec: the profile with the user's spec layered over it.
	spec, err := profile.Apply(&obj.Spec)
	if err != nil {
		return ctrl.Result{}, outcome{err: stalled(ReasonInvalidSpec, "spec.profile: %v", err)}
	}
	opts, err := r.renderOptions(spec.Version)
	if err != nil {
		return ctrl.Result{}, outcome{err: err}
	}
	if err := r.checkRevision(ctx, obj); err != nil {
		return ctrl.Result{}, outcome{err: err}
	}

	// 2. Render. A failure here deletes nothing: the last good install stays.
	res, err := r.Renderer.Render(obj.Name, spec, opts)
	if err != nil {
		var rerr *render.Error
		if errors.As(err, &rerr) {
			return ctrl.Result{}, outcome{err: stalled(ReasonRenderFailed, "%v", err)}
		}
		return ctrl.Result{}, outcome{err: transient(ReasonRenderFailed, err)}
	}
	if err := r.checkObjectOwners(ctx, obj, res.Objects); err != nil {
		return ctrl.Result{}, outcome{err: err}
	}

	// 3. Apply, unless nothing changed on either side since the last apply.
	if !r.Applier.UpToDate(ctx, obj.UID, res.Digest, res.Objects) {
		cs, err := r.Applier.Apply(ctx, obj.UID, res.Digest, res.Objects)
		if err != nil {
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				r.event(obj, corev1.EventTypeWarning, ReasonApplyFailed, "Apply", err.Error())
				return ctrl.Result{}, outcome{err: stalled(ReasonApplyFailed, "the API server rejected a rendered object: %v", err)}
			}
			return ctrl.Result{}, outcome{err: transient(ReasonApplyFailed, err)}
		}
		if changed := summarizeChanges(cs); changed != "" {
			log.Info("applied", "changes", changed)
			r.event(obj, corev1.EventTypeNormal, "Applied", "Apply", changed)
		}
	}

	// 4. Prune what the new render no longer has. Shared objects (CRDs, the
	// namespace) are never pruned; they stay in the inventory for uninstall.
	current := inventory.New(res.Objects)
	stale, err := inventory.Stale(obj.Status.Inventory, current)
	if err != nil {
		return ctrl.Result{}, outcome{err: transient(ReasonPruneFailed, err)}
	}
	var prune []*unstructured.Unstructured
	var kept []*unstructured.Unstructured
	for _, o := range stale {
		if render.Shared(o) {
			kept = append(kept, o)
		} else {
			prune = append(prune, o)
		}
	}
	obj.Status.Inventory = inventory.Union(current, inventory.New(kept))
	if len(obj.Status.Inventory.Entries) == 0 {
		obj.Status.Inventory = nil
	}
	if len(prune) > 0 {
		cs, err := r.Applier.Delete(ctx, obj.Name, prune)
		if err != nil {
			obj.Status.Inventory = inventory.Union(obj.Status.Inventory, inventory.New(prune))
			return ctrl.Result{}, outcome{err: transient(ReasonPruneFailed, err)}
		}
		if changed := summarizeChanges(cs); changed != "" {
			log.Info("pruned", "changes", changed)
			r.event(obj, corev1.EventTypeNormal, "Pruned", "Prune", changed)
		}
	}
	obj.Status.AppliedProfile = spec.Profile
	obj.Status.AppliedVersion = opts.Version
	obj.Status.AppliedRevision = revisionName(obj)

	// 5. Health, from the live objects.
	applied := func(o *unstructured.Unstructured) (apply.Observed, bool) { return r.Applier.Applied(obj.UID, o) }
	components, err := componentHealth(ctx, r.Client, r.Scheme(), res.Components, res.Objects, applied)
	if err != nil {
		return ctrl.Result{}, outcome{err: transient(ReasonReconciliationFailed, err)}
	}
	result := ctrl.Result{}
	for _, c := range components {
		if c.State == v1alpha1.ComponentProgressing || c.State == v1alpha1.ComponentDegraded {
			result.RequeueAfter = r.requeueInterval()
		}
	}
	return result, outcome{components: components}
}

// finalize deletes what the MeshInstall installed, waits until it is gone,
// then releases the finalizer. Shared objects go only with purgeOnDelete and
// when no other MeshInstall is left.
func (r *MeshInstallReconciler) finalize(ctx context.Context, obj *v1alpha1.MeshInstall) (ctrl.Result, outcome, bool) {
	if !controllerutil.ContainsFinalizer(obj, Finalizer) {
		return ctrl.Result{}, outcome{}, true
	}
	refs, err := inventory.Objects(obj.Status.Inventory)
	if err != nil {
		return ctrl.Result{}, outcome{err: transient(ReasonUninstalling, err)}, false
	}
	purgeShared := obj.Spec.PurgeOnDelete
	if purgeShared {
		if others := r.others(ctx, obj); len(others) > 0 {
			purgeShared = false
		}
	}
	var toDelete []*unstructured.Unstructured
	for _, o := range refs {
		if !render.Shared(o) || purgeShared {
			toDelete = append(toDelete, o)
		}
	}
	cs, err := r.Applier.Delete(ctx, obj.Name, toDelete)
	if err != nil {
		return ctrl.Result{}, outcome{err: transient(ReasonUninstalling, err)}, false
	}
	left, err := r.Applier.Remaining(ctx, obj.Name, toDelete)
	if err != nil {
		return ctrl.Result{}, outcome{err: transient(ReasonUninstalling, err)}, false
	}
	if len(left) > 0 {
		if summarizeChanges(cs) != "" {
			r.event(obj, corev1.EventTypeNormal, ReasonUninstalling, "Delete", fmt.Sprintf("deleting %d objects", len(left)))
		}
		return ctrl.Result{RequeueAfter: time.Second}, outcome{uninstalling: left}, false
	}
	patch := client.MergeFrom(obj.DeepCopy())
	controllerutil.RemoveFinalizer(obj, Finalizer)
	if err := r.Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, outcome{err: transient(ReasonUninstalling, fmt.Errorf("removing finalizer: %w", err))}, false
	}
	r.Applier.Forget(obj.UID)
	r.Renderer.Forget(obj.Name)
	ctrl.LoggerFrom(ctx).Info("uninstalled", "deleted", len(toDelete))
	return ctrl.Result{}, outcome{}, true
}

// renderOptions checks the requested version and returns the render options.
func (r *MeshInstallReconciler) renderOptions(version string) (render.Options, error) {
	opts := r.Render
	if version == "" {
		return opts, nil
	}
	if strings.TrimPrefix(version, "v") != strings.TrimPrefix(opts.Version, "v") {
		return opts, stalled(ReasonUnsupportedVersion,
			"spec.version %q is not installable by this operator, which installs version %s; leave spec.version empty or upgrade the operator",
			version, opts.Version)
	}
	return opts, nil
}

func revisionName(obj *v1alpha1.MeshInstall) string {
	if obj.Spec.Revision == "" {
		return "default"
	}
	return obj.Spec.Revision
}

// checkRevision makes the younger of two MeshInstalls for one revision stall.
func (r *MeshInstallReconciler) checkRevision(ctx context.Context, obj *v1alpha1.MeshInstall) error {
	list := &v1alpha1.MeshInstallList{}
	if err := r.List(ctx, list); err != nil {
		return transient(ReasonReconciliationFailed, err)
	}
	rev := revisionName(obj)
	for i := range list.Items {
		other := &list.Items[i]
		if other.UID == obj.UID || !other.DeletionTimestamp.IsZero() || revisionName(other) != rev {
			continue
		}
		if older(other, obj) {
			return stalled(ReasonRevisionConflict,
				"MeshInstall %q already installs revision %q; delete one of them or set a different spec.revision", other.Name, rev)
		}
	}
	return nil
}

func older(a, b *v1alpha1.MeshInstall) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// checkObjectOwners refuses to take over an object another MeshInstall
// manages, such as a gateway two revisions both enable.
func (r *MeshInstallReconciler) checkObjectOwners(ctx context.Context, obj *v1alpha1.MeshInstall, objects []*unstructured.Unstructured) error {
	for _, o := range objects {
		if render.Shared(o) {
			continue
		}
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := r.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return transient(ReasonReconciliationFailed, err)
		}
		owner := live.GetLabels()[render.LabelOwner]
		if owner == "" || owner == obj.Name {
			continue
		}
		other := &v1alpha1.MeshInstall{}
		if err := r.Get(ctx, types.NamespacedName{Name: owner}, other); apierrors.IsNotFound(err) {
			continue // left behind by a MeshInstall that is gone: adopt it
		} else if err != nil {
			return transient(ReasonReconciliationFailed, err)
		}
		return stalled(ReasonObjectConflict, "%s %s is managed by MeshInstall %q; disable it in one of the two MeshInstalls",
			o.GetKind(), objectName(o), owner)
	}
	return nil
}

// patchStatus writes the status if, and only if, it changed.
func (r *MeshInstallReconciler) patchStatus(ctx context.Context, before, obj *v1alpha1.MeshInstall) error {
	if apiequality.Semantic.DeepEqual(before.Status, obj.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// readyChangedEvent records an event when the Ready condition changes: a
// Warning for a stalled MeshInstall, Normal otherwise. Unchanged, it records
// nothing, so a no-op reconcile writes nothing.
func (r *MeshInstallReconciler) readyChangedEvent(before, obj *v1alpha1.MeshInstall) {
	old := apimeta.FindStatusCondition(before.Status.Conditions, ConditionReady)
	now := apimeta.FindStatusCondition(obj.Status.Conditions, ConditionReady)
	if now == nil || (old != nil && old.Status == now.Status && old.Reason == now.Reason) {
		return
	}
	eventType := corev1.EventTypeNormal
	if apimeta.IsStatusConditionTrue(obj.Status.Conditions, ConditionStalled) {
		eventType = corev1.EventTypeWarning
	}
	r.event(obj, eventType, now.Reason, "Reconcile", now.Message)
}

func (r *MeshInstallReconciler) event(obj *v1alpha1.MeshInstall, eventType, reason, action, note string) {
	if r.Events != nil {
		r.Events.Eventf(obj, nil, eventType, reason, action, "%s", truncate(note, 1000))
	}
}

func (r *MeshInstallReconciler) requeueInterval() time.Duration {
	if r.RequeueInterval > 0 {
		return r.RequeueInterval
	}
	return DefaultRequeueInterval
}

// summarizeChanges describes what a change set did, e.g.
// "created 3 (Deployment/istio-system/istiod, ...), deleted 1 (...)"; empty
// when nothing changed.
func summarizeChanges(cs *ssa.ChangeSet) string {
	if cs == nil {
		return ""
	}
	grouped := cs.ToGroupedMap()
	var parts []string
	for _, action := range []ssa.Action{ssa.CreatedAction, ssa.ConfiguredAction, ssa.DeletedAction} {
		subjects := grouped[action]
		if len(subjects) == 0 {
			continue
		}
		slices.Sort(subjects)
		parts = append(parts, fmt.Sprintf("%s %d (%s)", action, len(subjects), abbreviate(subjects, 5)))
	}
	return strings.Join(parts, ", ")
}
