package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
	"github.com/mizzen-mesh/mizzen/internal/render"
)

// Each profile installs exactly its components, every one of them Healthy,
// with a status kstatus-based tools read as Current; deleting the
// MeshInstall removes what it installed and keeps the CRDs and namespace.
func TestProfilesInstallTheirComponents(t *testing.T) {
	cases := []struct {
		profile     string
		deployments string
		healthy     []string
	}{
		{"demo", "grafana,istio-egressgateway,istio-ingressgateway,istio-sidecar-injector,istiod,jaeger,kiali,prometheus",
			[]string{"base", "controlplane", "injector", "ingress.istio-ingressgateway", "egress.istio-egressgateway", "prometheus", "grafana", "jaeger", "kiali"}},
		{"default", "istio-ingressgateway,istio-sidecar-injector,istiod",
			[]string{"base", "controlplane", "injector", "ingress.istio-ingressgateway"}},
		{"minimal", "istio-sidecar-injector,istiod", []string{"base", "controlplane", "injector"}},
		{"empty", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.profile, func(t *testing.T) {
			ns := "mesh-" + tc.profile
			name := "profile-" + tc.profile
			install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: %s, namespace: %s}", name, tc.profile, ns))
			mi := waitReady(t, name)

			if got := strings.Join(deployments(t, ns, name), ","); got != tc.deployments {
				t.Errorf("deployments = %q, want %q", got, tc.deployments)
			}
			states := componentStates(mi)
			for _, c := range tc.healthy {
				if states[c] != v1alpha1.ComponentHealthy {
					t.Errorf("component %s is %q, want Healthy (status: %+v)", c, states[c], mi.Status.Components)
				}
				delete(states, c)
			}
			for c, s := range states {
				if s != v1alpha1.ComponentDisabled {
					t.Errorf("component %s is %s, want Disabled", c, s)
				}
			}
			if res := kstatusOf(t, mi); res.Status != kstatus.CurrentStatus {
				t.Errorf("kstatus = %s (%s), want Current", res.Status, res.Message)
			}
			if mi.Status.AppliedProfile != tc.profile || mi.Status.AppliedVersion != "0.1.0" || mi.Status.AppliedRevision != "default" {
				t.Errorf("applied = %s/%s/%s", mi.Status.AppliedProfile, mi.Status.AppliedVersion, mi.Status.AppliedRevision)
			}
			if tc.profile == "empty" {
				if mi.Status.Inventory != nil && len(mi.Status.Inventory.Entries) > 0 {
					t.Errorf("the empty profile applied %d objects", len(mi.Status.Inventory.Entries))
				}
				return
			}
			// Every inventory entry exists and carries the labels.
			for _, e := range mi.Status.Inventory.Entries {
				if !strings.Contains(e.ID, "_") || e.Version == "" {
					t.Errorf("inventory entry %+v", e)
				}
			}
			// Pods of every Deployment run on the fake nodes.
			for _, d := range strings.Split(tc.deployments, ",") {
				dep := &appsv1.Deployment{}
				if err := get(t, dep, ns, d); err != nil {
					t.Fatal(err)
				}
				if dep.Status.ReadyReplicas < 1 {
					t.Errorf("deployment %s has %d ready replicas", d, dep.Status.ReadyReplicas)
				}
			}

			uninstall(t, name)
			if left := deployments(t, ns, name); len(left) > 0 {
				t.Errorf("deployments left after uninstall: %v", left)
			}
			for _, kind := range []client.ObjectList{&corev1.ServiceList{}, &corev1.ConfigMapList{}, &corev1.ServiceAccountList{}} {
				if err := k.List(context.Background(), kind, client.InNamespace(ns), client.MatchingLabels{render.LabelOwner: name}); err != nil {
					t.Fatal(err)
				}
				if n := len(itemsOf(kind)); n > 0 {
					t.Errorf("%T: %d objects left after uninstall", kind, n)
				}
			}
			if err := get(t, &corev1.Namespace{}, "", ns); err != nil {
				t.Errorf("the mesh namespace was deleted without purgeOnDelete: %v", err)
			}
			if err := get(t, &apiextensionsv1.CustomResourceDefinition{}, "", "virtualservices.networking.istio.io"); err != nil {
				t.Errorf("the Istio CRDs were deleted without purgeOnDelete: %v", err)
			}
		})
	}
}

func itemsOf(list client.ObjectList) []any {
	switch l := list.(type) {
	case *corev1.ServiceList:
		return toAny(l.Items)
	case *corev1.ConfigMapList:
		return toAny(l.Items)
	case *corev1.ServiceAccountList:
		return toAny(l.Items)
	}
	panic(fmt.Sprintf("unexpected list %T", list))
}

func toAny[T any](items []T) []any {
	out := make([]any, len(items))
	for i := range items {
		out[i] = items[i]
	}
	return out
}

// Deleting a MeshInstall with purgeOnDelete also deletes the Istio CRDs and
// the mesh namespace, when no other MeshInstall is left.
func TestPurgeOnDeleteRemovesCRDsAndNamespace(t *testing.T) {
	name, ns := "purge", "mesh-purge"
	install(t, fmt.Sprintf("metadata: {name: %s}\nspec: {profile: minimal, namespace: %s, purgeOnDelete: true}", name, ns))
	waitReady(t, name)
	uninstall(t, name)
	for _, crd := range []string{"virtualservices.networking.istio.io", "peerauthentications.security.istio.io", "telemetries.telemetry.istio.io"} {
		eventually(t, installTimeout, "CRD "+crd+" is gone", func() error {
			err := get(t, &apiextensionsv1.CustomResourceDefinition{}, "", crd)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
	}
	eventually(t, installTimeout, "namespace "+ns+" is gone", func() error {
		err := get(t, &corev1.Namespace{}, "", ns)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}
