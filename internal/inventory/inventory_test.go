package inventory

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mizzen-mesh/mizzen/api/v1alpha1"
)

func obj(apiVersion, kind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func TestStaleIsWhatTheNewRenderDropped(t *testing.T) {
	old := New([]*unstructured.Unstructured{
		obj("apps/v1", "Deployment", "istio-system", "istiod"),
		obj("apps/v1", "Deployment", "istio-system", "istio-ingressgateway"),
		obj("v1", "Service", "istio-system", "istio-ingressgateway"),
		obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "istiod-istio-system"),
	})
	current := New([]*unstructured.Unstructured{
		obj("apps/v1", "Deployment", "istio-system", "istiod"),
		obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "istiod-istio-system"),
	})
	stale, err := Stale(old, current)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range stale {
		got = append(got, s.GetAPIVersion()+" "+s.GetKind()+" "+s.GetNamespace()+"/"+s.GetName())
	}
	want := `["v1 Service istio-system/istio-ingressgateway","apps/v1 Deployment istio-system/istio-ingressgateway"]`
	if data, _ := json.Marshal(got); string(data) != want {
		t.Errorf("stale = %s, want %s", data, want)
	}
	if s, _ := Stale(nil, current); s != nil {
		t.Errorf("nothing is stale without an old inventory, got %v", s)
	}
}

func TestIDsAreFluxStyleAndRoundTrip(t *testing.T) {
	inv := New([]*unstructured.Unstructured{obj("networking.istio.io/v1", "Gateway", "", "x"), obj("v1", "ConfigMap", "ns", "istio")})
	if inv.Entries[0].ID != "_x_networking.istio.io_Gateway" || inv.Entries[0].Version != "v1" {
		t.Errorf("entry = %+v", inv.Entries[0])
	}
	if inv.Entries[1].ID != "ns_istio__ConfigMap" {
		t.Errorf("entry = %+v", inv.Entries[1])
	}
	objs, err := Objects(inv)
	if err != nil || objs[1].GetAPIVersion() != "v1" || objs[1].GetName() != "istio" || objs[1].GetNamespace() != "ns" {
		t.Errorf("Objects = %v, %v", objs, err)
	}
	if _, err := Ref(v1alpha1.ResourceRef{ID: "garbage"}); err == nil {
		t.Error("a malformed ID parsed")
	}
}

func TestUnionOfNothingSerializesAsAnEmptyList(t *testing.T) {
	data, err := json.Marshal(Union(nil, nil))
	if err != nil || string(data) != `{"entries":[]}` {
		t.Errorf("Union(nil, nil) = %s, %v", data, err)
	}
}
