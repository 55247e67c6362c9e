package controllers

import (
	"errors"
	"fmt"
	"strings"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
)

// Condition types: kstatus-compatible, understood by kubectl wait, Flux and Argo CD.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Condition reasons.
const (
	ReasonInstallSucceeded      = "InstallSucceeded"
	ReasonProgressing           = "Progressing"
	ReasonComponentsDegraded    = "ComponentsDegraded"
	ReasonInvalidSpec           = "InvalidSpec"
	ReasonUnsupportedVersion    = "UnsupportedVersion"
	ReasonRevisionConflict      = "RevisionConflict"
	ReasonObjectConflict        = "ObjectConflict"
	ReasonRenderFailed          = "RenderFailed"
	ReasonApplyFailed           = "ApplyFailed"
	ReasonPruneFailed           = "PruneFailed"
	ReasonReconciliationFailed  = "ReconciliationFailed"
	ReasonUninstalling          = "Uninstalling"
	ReasonRetryingAfterFailure  = "RetryingAfterFailure"
	ReasonNothingToInstall      = "NothingToInstall"
	ReasonProgressingComponents = "ComponentsProgressing"
)

// stalledError is a failure that retrying cannot fix until the spec (or the
// other MeshInstall it conflicts with) changes.
type stalledError struct {
	reason  string
	message string
}

func (e *stalledError) Error() string { return e.message }

func stalled(reason, format string, args ...any) error {
	return &stalledError{reason: reason, message: fmt.Sprintf(format, args...)}
}

// transientError is a failure worth retrying, with the reason to report.
type transientError struct {
	reason string
	err    error
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &transientError{reason: reason, err: err}
}

// outcome is what one reconcile found, the input of summarize.
type outcome struct {
	// err is nil, a *stalledError, or a transient error.
	err error
	// components is the health of every component; nil when the reconcile
	// did not get as far as computing it.
	components []v1alpha1.ComponentStatus
	// uninstalling lists the objects an uninstall still waits for.
	uninstalling []string
}

// summarize computes the Ready, Reconciling and Stalled conditions and the
// observed generation from an outcome. It is the only place that sets Ready.
func summarize(obj *v1alpha1.MeshInstall, out outcome) {
	gen := obj.Generation
	if out.components != nil {
		obj.Status.Components = out.components
	}
	var se *stalledError
	switch {
	case out.uninstalling != nil:
		msg := fmt.Sprintf("uninstalling: waiting for %d objects to be deleted: %s", len(out.uninstalling), abbreviate(out.uninstalling, 3))
		setCondition(obj, ConditionReady, metav1.ConditionFalse, ReasonUninstalling, msg)
		setCondition(obj, ConditionReconciling, metav1.ConditionTrue, ReasonUninstalling, msg)
		removeCondition(obj, ConditionStalled)
	case errors.As(out.err, &se):
		setCondition(obj, ConditionReady, metav1.ConditionFalse, se.reason, se.message)
		setCondition(obj, ConditionStalled, metav1.ConditionTrue, se.reason, se.message)
		removeCondition(obj, ConditionReconciling)
		obj.Status.ObservedGeneration = gen
	case out.err != nil:
		reason := ReasonReconciliationFailed
		var te *transientError
		if errors.As(out.err, &te) {
			reason = te.reason
		}
		setCondition(obj, ConditionReady, metav1.ConditionFalse, reason, out.err.Error())
		setCondition(obj, ConditionReconciling, metav1.ConditionTrue, ReasonRetryingAfterFailure,
			"retrying after: "+out.err.Error())
		removeCondition(obj, ConditionStalled)
	default:
		setHealthConditions(obj, out.components)
		obj.Status.ObservedGeneration = gen
	}
}

// setHealthConditions sets the conditions of a reconcile that applied
// everything, from the components' health.
func setHealthConditions(obj *v1alpha1.MeshInstall, components []v1alpha1.ComponentStatus) {
	var degraded, progressing []string
	enabled := 0
	for _, c := range components {
		switch c.State {
		case v1alpha1.ComponentDegraded:
			degraded = append(degraded, describe(c))
		case v1alpha1.ComponentProgressing:
			progressing = append(progressing, describe(c))
		}
		if c.State != v1alpha1.ComponentDisabled {
			enabled++
		}
	}
	switch {
	case len(degraded) > 0:
		msg := "degraded: " + strings.Join(degraded, "; ")
		setCondition(obj, ConditionReady, metav1.ConditionFalse, ReasonComponentsDegraded, msg)
		setCondition(obj, ConditionStalled, metav1.ConditionTrue, ReasonComponentsDegraded, msg)
		removeCondition(obj, ConditionReconciling)
	case len(progressing) > 0:
		msg := "waiting for: " + strings.Join(progressing, "; ")
		setCondition(obj, ConditionReady, metav1.ConditionFalse, ReasonProgressingComponents, msg)
		setCondition(obj, ConditionReconciling, metav1.ConditionTrue, ReasonProgressingComponents, msg)
		removeCondition(obj, ConditionStalled)
	default:
		msg := fmt.Sprintf("%d components healthy", enabled)
		reason := ReasonInstallSucceeded
		if enabled == 0 {
			msg, reason = "the profile and spec enable no component", ReasonNothingToInstall
		}
		setCondition(obj, ConditionReady, metav1.ConditionTrue, reason, msg)
		removeCondition(obj, ConditionReconciling)
		removeCondition(obj, ConditionStalled)
	}
}

func describe(c v1alpha1.ComponentStatus) string {
	if c.Message == "" {
		return c.Name
	}
	return c.Name + " (" + c.Message + ")"
}

func abbreviate(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

func setCondition(obj *v1alpha1.MeshInstall, t string, s metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type: t, Status: s, Reason: reason, Message: truncate(msg, 1024), ObservedGeneration: obj.Generation,
	})
}

func removeCondition(obj *v1alpha1.MeshInstall, t string) {
	apimeta.RemoveStatusCondition(&obj.Status.Conditions, t)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
