package security

import (
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// selects reports whether a workload selector matches the proxy's labels.
// A nil or empty selector matches every workload.
func selects(sel *typev1beta1.WorkloadSelector, labels map[string]string) bool {
	for k, v := range sel.GetMatchLabels() {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// hasSelector reports whether a selector names at least one label.
func hasSelector(sel *typev1beta1.WorkloadSelector) bool {
	return len(sel.GetMatchLabels()) > 0
}

// hasTargetRef reports whether a policy is attached by targetRef(s), which
// binds it to Gateway API gateways and waypoints, never to sidecars.
func hasTargetRef(ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) bool {
	return ref != nil || len(refs) > 0
}

// appliesMeshOrNamespace reports whether a policy in namespace ns with the
// given selector applies to the proxy, with the scoping that
// AuthorizationPolicy and RequestAuthentication share: a policy in the root
// namespace applies to every namespace, one elsewhere to its own namespace
// only; a selector narrows it to matching workloads.
func appliesMeshOrNamespace(push *model.PushContext, proxy *model.Proxy, ns string, sel *typev1beta1.WorkloadSelector) bool {
	if ns != push.RootNamespace && ns != proxy.Namespace {
		return false
	}
	return selects(sel, proxy.Labels)
}
