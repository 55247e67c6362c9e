package security

import (
	"sort"

	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// Mode is the mutual TLS mode of one inbound workload port.
type Mode int

// Modes, as PeerAuthentication names them.
const (
	// ModeDisable: only plaintext is accepted.
	ModeDisable Mode = iota + 1
	// ModePermissive: mutual TLS and plaintext are both accepted.
	ModePermissive
	// ModeStrict: only mutual TLS is accepted.
	ModeStrict
)

// String returns the PeerAuthentication name of the mode.
func (m Mode) String() string {
	switch m {
	case ModeDisable:
		return "DISABLE"
	case ModePermissive:
		return "PERMISSIVE"
	case ModeStrict:
		return "STRICT"
	}
	return "UNSET"
}

// AcceptsPlaintext reports whether the inbound chain for plaintext
// (transport_protocol raw_buffer) exists for the port.
func (m Mode) AcceptsPlaintext() bool { return m == ModeDisable || m == ModePermissive }

// AcceptsMTLS reports whether the inbound mTLS chain exists for the port.
func (m Mode) AcceptsMTLS() bool { return m == ModeStrict || m == ModePermissive }

func fromIstio(m securityv1beta1.PeerAuthentication_MutualTLS_Mode) Mode {
	switch m {
	case securityv1beta1.PeerAuthentication_MutualTLS_DISABLE:
		return ModeDisable
	case securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE:
		return ModePermissive
	case securityv1beta1.PeerAuthentication_MutualTLS_STRICT:
		return ModeStrict
	}
	return 0 // UNSET: inherit
}

// InboundMTLSMode is the mutual TLS mode a workload port accepts, with
// PeerAuthentication's precedence: the oldest policy in the proxy's
// namespace whose selector matches the proxy, then the oldest
// namespace-wide policy (no selector), then the oldest mesh-wide policy (no
// selector, root namespace), then PERMISSIVE. A level whose mode is UNSET
// (or absent) inherits from the next one. portLevelMtls, keyed by the
// workload (target) port, is honoured on selector policies only and
// overrides their workload-level mode; UNSET there inherits too.
func InboundMTLSMode(push *model.PushContext, proxy *model.Proxy, port uint32) Mode {
	var workload, namespace, mesh *model.Config[*securityv1beta1.PeerAuthentication]
	for _, i := range oldestFirst(push.PeerAuthentications) {
		pa := &push.PeerAuthentications[i]
		switch {
		case hasSelector(pa.Spec.GetSelector()):
			if workload == nil && pa.Namespace == proxy.Namespace && selects(pa.Spec.GetSelector(), proxy.Labels) {
				workload = pa
			}
		case pa.Namespace == proxy.Namespace && namespace == nil:
			namespace = pa
		}
		// The root namespace's selector-less policy is mesh-wide; when the
		// proxy lives in the root namespace it is also its namespace policy,
		// which resolves to the same mode.
		if !hasSelector(pa.Spec.GetSelector()) && pa.Namespace == push.RootNamespace && mesh == nil {
			mesh = pa
		}
	}
	if workload != nil {
		if pm, ok := workload.Spec.GetPortLevelMtls()[port]; ok {
			if m := fromIstio(pm.GetMode()); m != 0 {
				return m
			}
		}
		if m := fromIstio(workload.Spec.GetMtls().GetMode()); m != 0 {
			return m
		}
	}
	if namespace != nil {
		if m := fromIstio(namespace.Spec.GetMtls().GetMode()); m != 0 {
			return m
		}
	}
	if mesh != nil {
		if m := fromIstio(mesh.Spec.GetMtls().GetMode()); m != 0 {
			return m
		}
	}
	return ModePermissive
}

// oldestFirst returns the indexes of configs ordered oldest first without
// reordering the shared (immutable) slice.
func oldestFirst[T any](c []model.Config[T]) []int {
	idx := make([]int, len(c))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool {
		a, b := c[idx[i]], c[idx[j]]
		if !a.CreationTimestamp.Equal(b.CreationTimestamp) {
			return a.CreationTimestamp.Before(b.CreationTimestamp)
		}
		return a.Key() < b.Key()
	})
	return idx
}
