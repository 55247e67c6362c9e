package security

import (
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

type paMode = securityv1beta1.PeerAuthentication_MutualTLS_Mode

const (
	unset      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
	disable    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
	permissive = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
	strict     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
)

func pa(ns, name string, age int, sel map[string]string, mode paMode, ports map[uint32]paMode) model.Config[*securityv1beta1.PeerAuthentication] {
	spec := &securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}}
	if sel != nil {
		spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
	}
	if ports != nil {
		spec.PortLevelMtls = map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		for p, m := range ports {
			spec.PortLevelMtls[p] = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
		}
	}
	return model.Config[*securityv1beta1.PeerAuthentication]{Meta: meta(model.KindPeerAuthentication, ns, name, age), Spec: spec}
}

func TestInboundMTLSMode(t *testing.T) {
	app := map[string]string{"app": "reviews"}
	other := map[string]string{"app": "ratings"}
	tests := []struct {
		name     string
		policies []model.Config[*securityv1beta1.PeerAuthentication]
		proxyNS  string
		port     uint32
		want     Mode
	}{
		{name: "no policy is permissive", want: ModePermissive},
		{name: "mesh strict", policies: []model.Config[*securityv1beta1.PeerAuthentication]{pa(rootNS, "default", 0, nil, strict, nil)}, want: ModeStrict},
		{name: "mesh disable", policies: []model.Config[*securityv1beta1.PeerAuthentication]{pa(rootNS, "default", 0, nil, disable, nil)}, want: ModeDisable},
		{name: "mesh unset is permissive", policies: []model.Config[*securityv1beta1.PeerAuthentication]{pa(rootNS, "default", 0, nil, unset, nil)}, want: ModePermissive},
		{name: "namespace overrides mesh", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "default", 0, nil, strict, nil), pa("bookinfo", "ns", 1, nil, permissive, nil)}, want: ModePermissive},
		{name: "namespace unset inherits mesh", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "default", 0, nil, strict, nil), pa("bookinfo", "ns", 1, nil, unset, nil)}, want: ModeStrict},
		{name: "other namespace ignored", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("other", "ns", 0, nil, strict, nil)}, want: ModePermissive},
		{name: "workload overrides namespace", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "ns", 0, nil, strict, nil), pa("bookinfo", "wl", 1, app, disable, nil)}, want: ModeDisable},
		{name: "workload selector not matching", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "ns", 0, nil, strict, nil), pa("bookinfo", "wl", 1, other, disable, nil)}, want: ModeStrict},
		{name: "workload selector in other namespace ignored", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("other", "wl", 1, app, strict, nil)}, want: ModePermissive},
		{name: "root namespace selector is not mesh-wide", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "wl", 1, app, strict, nil)}, want: ModePermissive},
		{name: "workload unset inherits namespace", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "ns", 0, nil, disable, nil), pa("bookinfo", "wl", 1, app, unset, nil)}, want: ModeDisable},
		{name: "oldest workload policy wins", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "newer", 5, app, disable, nil), pa("bookinfo", "older", 1, app, strict, nil)}, want: ModeStrict},
		{name: "same age: name order", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "b", 1, app, disable, nil), pa("bookinfo", "a", 1, app, strict, nil)}, want: ModeStrict},
		{name: "oldest namespace policy wins", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "newer", 5, nil, disable, nil), pa("bookinfo", "older", 1, nil, strict, nil)}, want: ModeStrict},
		{name: "port level overrides workload", port: 9080, policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "default", 0, nil, strict, nil), pa("bookinfo", "wl", 1, app, strict, map[uint32]paMode{9080: disable})}, want: ModeDisable},
		{name: "port level other port", port: 9090, policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "default", 0, nil, strict, nil), pa("bookinfo", "wl", 1, app, unset, map[uint32]paMode{9080: disable})}, want: ModeStrict},
		{name: "port level unset inherits workload", port: 9080, policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "wl", 1, app, strict, map[uint32]paMode{9080: unset})}, want: ModeStrict},
		{name: "port level on namespace policy ignored", port: 9080, policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa("bookinfo", "ns", 1, nil, strict, map[uint32]paMode{9080: disable})}, want: ModeStrict},
		{name: "proxy in root namespace", proxyNS: rootNS, policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "default", 0, nil, strict, nil)}, want: ModeStrict},
		{name: "nil mtls inherits", policies: []model.Config[*securityv1beta1.PeerAuthentication]{
			pa(rootNS, "default", 0, nil, disable, nil),
			{Meta: meta(model.KindPeerAuthentication, "bookinfo", "empty", 1), Spec: &securityv1beta1.PeerAuthentication{}}}, want: ModeDisable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			push := newPush()
			push.PeerAuthentications = tt.policies
			ns := tt.proxyNS
			if ns == "" {
				ns = "bookinfo"
			}
			if got := InboundMTLSMode(push, sidecar(ns, app), tt.port); got != tt.want {
				t.Errorf("InboundMTLSMode = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestModeChains(t *testing.T) {
	for _, tt := range []struct {
		m               Mode
		plaintext, mtls bool
	}{{ModeDisable, true, false}, {ModePermissive, true, true}, {ModeStrict, false, true}} {
		if tt.m.AcceptsPlaintext() != tt.plaintext || tt.m.AcceptsMTLS() != tt.mtls {
			t.Errorf("%v: plaintext %v mtls %v, want %v %v", tt.m, tt.m.AcceptsPlaintext(), tt.m.AcceptsMTLS(), tt.plaintext, tt.mtls)
		}
	}
}
