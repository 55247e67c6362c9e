package controllers

import (
	"context"
	"fmt"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/apply"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// appliedFunc tells what the last apply left of an object in the API server
// (its UID and generation), when known.
type appliedFunc func(*unstructured.Unstructured) (apply.Observed, bool)

// componentHealth computes every component's state from the live objects in
// the cache, with kstatus deciding each object's status. An object the cache
// shows older than the last apply left it (a Deployment whose new
// generation has not arrived yet) is Progressing: its status there
// describes the previous spec.
func componentHealth(ctx context.Context, c client.Reader, scheme *runtime.Scheme, components []render.Component, objects []*unstructured.Unstructured, applied appliedFunc) ([]v1alpha1.ComponentStatus, error) {
	byComponent := map[string][]*unstructured.Unstructured{}
	for _, o := range objects {
		name := o.GetLabels()[render.LabelComponent]
		byComponent[name] = append(byComponent[name], o)
	}
	out := make([]v1alpha1.ComponentStatus, 0, len(components))
	for _, comp := range components {
		if !comp.Enabled {
			out = append(out, v1alpha1.ComponentStatus{Name: comp.Name, State: v1alpha1.ComponentDisabled})
			continue
		}
		cs := v1alpha1.ComponentStatus{Name: comp.Name, State: v1alpha1.ComponentHealthy}
		for _, o := range byComponent[comp.Name] {
			st, msg, err := objectStatus(ctx, c, scheme, o, applied)
			if err != nil {
				return nil, err
			}
			state := stateOf(st)
			if worse(state, cs.State) {
				cs.State = state
				cs.Message = fmt.Sprintf("%s %s: %s", o.GetKind(), objectName(o), msg)
			}
		}
		out = append(out, cs)
	}
	return out, nil
}

// statusKinds are the kinds whose status says more than their existence;
// they are read in full from the cache. Every other kind is healthy once it
// exists.
var statusKinds = map[schema.GroupKind]bool{
	{Group: "apps", Kind: "Deployment"}:                     true,
	{Group: "apps", Kind: "StatefulSet"}:                    true,
	{Group: "apps", Kind: "DaemonSet"}:                      true,
	{Group: "", Kind: "Service"}:                            true,
	{Group: "policy", Kind: "PodDisruptionBudget"}:          true,
	{Group: "autoscaling", Kind: "HorizontalPodAutoscaler"}: true,
}

func objectStatus(ctx context.Context, c client.Reader, scheme *runtime.Scheme, o *unstructured.Unstructured, applied appliedFunc) (kstatus.Status, string, error) {
	gvk := o.GroupVersionKind()
	key := client.ObjectKeyFromObject(o)
	if !statusKinds[gvk.GroupKind()] {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(gvk)
		if err := c.Get(ctx, key, live); err != nil {
			if apierrors.IsNotFound(err) {
				return kstatus.NotFoundStatus, "not found", nil
			}
			return "", "", err
		}
		if live.GetDeletionTimestamp() != nil {
			return kstatus.TerminatingStatus, "being deleted", nil
		}
		return kstatus.CurrentStatus, "", nil
	}
	typed, err := scheme.New(gvk)
	if err != nil {
		return "", "", err
	}
	live := typed.(client.Object)
	if err := c.Get(ctx, key, live); err != nil {
		if apierrors.IsNotFound(err) {
			return kstatus.NotFoundStatus, "not found", nil
		}
		return "", "", err
	}
	if applied != nil {
		if want, ok := applied(o); ok && (live.GetUID() != want.UID || live.GetGeneration() < want.Generation) {
			return kstatus.InProgressStatus, fmt.Sprintf("generation %d applied, not observed yet", want.Generation), nil
		}
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
	if err != nil {
		return "", "", err
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(gvk)
	res, err := kstatus.Compute(u)
	if err != nil {
		return "", "", err
	}
	return res.Status, res.Message, nil
}

func stateOf(s kstatus.Status) v1alpha1.ComponentState {
	switch s {
	case kstatus.CurrentStatus:
		return v1alpha1.ComponentHealthy
	case kstatus.FailedStatus:
		return v1alpha1.ComponentDegraded
	default:
		return v1alpha1.ComponentProgressing
	}
}

var severity = map[v1alpha1.ComponentState]int{
	v1alpha1.ComponentHealthy:     0,
	v1alpha1.ComponentProgressing: 1,
	v1alpha1.ComponentDegraded:    2,
}

func worse(a, b v1alpha1.ComponentState) bool { return severity[a] > severity[b] }

func objectName(o client.Object) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}
