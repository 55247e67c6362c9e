package discovery

import (
	"context"
	"fmt"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	telemetryv1alpha1 "istio.io/client-go/pkg/apis/telemetry/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func names[T any](cfgs []model.Config[T], ns string) []string {
	var out []string
	for _, c := range cfgs {
		if c.Namespace == ns {
			out = append(out, c.Name)
		}
	}
	return out
}

// inNamespace keeps the services of one namespace (each test has its own).
func inNamespace(svcs []*model.Service, ns string) []*model.Service {
	var out []*model.Service
	for _, s := range svcs {
		if s.Namespace == ns {
			out = append(out, s)
		}
	}
	return out
}

// The CRDs serve v1, v1beta1 and v1alpha3 (security: v1, v1beta1;
// telemetry: v1, v1alpha1) with one schema: discovery watches v1 and sees
// objects written in every version, with their specs.
func TestIstioObjectsInEveryVersion(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "istio")
	om := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }
	vs := func(host string) networking.VirtualService {
		return networking.VirtualService{Hosts: []string{host}, Http: []*networking.HTTPRoute{{
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host}}}}}}
	}
	dr := func(host string) networking.DestinationRule {
		return networking.DestinationRule{Host: host, Subsets: []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}}}
	}
	pa := func() security.PeerAuthentication {
		return security.PeerAuthentication{Mtls: &security.PeerAuthentication_MutualTLS{Mode: security.PeerAuthentication_MutualTLS_STRICT}}
	}
	sel := &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ist.NetworkingV1alpha3().VirtualServices(ns).Create(ctx, &networkingv1alpha3.VirtualService{ObjectMeta: om("vs-v1alpha3"), Spec: vs("a.example.com")}, metav1.CreateOptions{}))
	must(ist.NetworkingV1beta1().VirtualServices(ns).Create(ctx, &networkingv1beta1.VirtualService{ObjectMeta: om("vs-v1beta1"), Spec: vs("b.example.com")}, metav1.CreateOptions{}))
	must(ist.NetworkingV1().VirtualServices(ns).Create(ctx, &networkingv1.VirtualService{ObjectMeta: om("vs-v1"), Spec: vs("c.example.com")}, metav1.CreateOptions{}))
	must(ist.NetworkingV1alpha3().DestinationRules(ns).Create(ctx, &networkingv1alpha3.DestinationRule{ObjectMeta: om("dr-v1alpha3"), Spec: dr("a.example.com")}, metav1.CreateOptions{}))
	must(ist.NetworkingV1beta1().DestinationRules(ns).Create(ctx, &networkingv1beta1.DestinationRule{ObjectMeta: om("dr-v1beta1"), Spec: dr("b.example.com")}, metav1.CreateOptions{}))
	must(ist.NetworkingV1().DestinationRules(ns).Create(ctx, &networkingv1.DestinationRule{ObjectMeta: om("dr-v1"), Spec: dr("c.example.com")}, metav1.CreateOptions{}))
	must(ist.NetworkingV1alpha3().Gateways(ns).Create(ctx, &networkingv1alpha3.Gateway{ObjectMeta: om("gw-v1alpha3"), Spec: networking.Gateway{
		Selector: map[string]string{"istio": "ingressgateway"},
		Servers:  []*networking.Server{{Port: &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"}, Hosts: []string{"*"}}}}}, metav1.CreateOptions{}))
	must(ist.NetworkingV1beta1().ServiceEntries(ns).Create(ctx, &networkingv1beta1.ServiceEntry{ObjectMeta: om("se-v1beta1"), Spec: networking.ServiceEntry{
		Hosts: []string{"api.example.com"}, Resolution: networking.ServiceEntry_DNS, Location: networking.ServiceEntry_MESH_EXTERNAL,
		Ports: []*networking.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}}}, metav1.CreateOptions{}))
	must(ist.NetworkingV1().ServiceEntries(ns).Create(ctx, &networkingv1.ServiceEntry{ObjectMeta: om("se-v1"), Spec: networking.ServiceEntry{
		Hosts: []string{"db.internal"}, Addresses: []string{"240.240.0.1"}, Resolution: networking.ServiceEntry_STATIC,
		Location: networking.ServiceEntry_MESH_INTERNAL, Ports: []*networking.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP"}},
		Endpoints: []*networking.WorkloadEntry{{Address: "10.9.0.1"}, {Address: "10.9.0.2"}}}}, metav1.CreateOptions{}))
	must(ist.NetworkingV1beta1().Sidecars(ns).Create(ctx, &networkingv1beta1.Sidecar{ObjectMeta: om("sidecar-v1beta1"), Spec: networking.Sidecar{
		Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*", "istio-system/*"}}}}}, metav1.CreateOptions{}))
	must(ist.SecurityV1beta1().PeerAuthentications(ns).Create(ctx, &securityv1beta1.PeerAuthentication{ObjectMeta: om("pa-v1beta1"), Spec: pa()}, metav1.CreateOptions{}))
	must(ist.SecurityV1().PeerAuthentications(ns).Create(ctx, &securityv1.PeerAuthentication{ObjectMeta: om("pa-v1"), Spec: pa()}, metav1.CreateOptions{}))
	must(ist.SecurityV1beta1().AuthorizationPolicies(ns).Create(ctx, &securityv1beta1.AuthorizationPolicy{ObjectMeta: om("authz-v1beta1"), Spec: security.AuthorizationPolicy{
		Selector: sel, Action: security.AuthorizationPolicy_DENY, Rules: []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Paths: []string{"/admin"}}}}}}}}, metav1.CreateOptions{}))
	must(ist.SecurityV1().RequestAuthentications(ns).Create(ctx, &securityv1.RequestAuthentication{ObjectMeta: om("jwt-v1"), Spec: security.RequestAuthentication{
		Selector: sel, JwtRules: []*security.JWTRule{{Issuer: "https://issuer.example.com", Jwks: `{"keys":[]}`}}}}, metav1.CreateOptions{}))
	must(ist.TelemetryV1alpha1().Telemetries(ns).Create(ctx, &telemetryv1alpha1.Telemetry{ObjectMeta: om("tel-v1alpha1"), Spec: telemetry.Telemetry{
		AccessLogging: []*telemetry.AccessLogging{{Providers: []*telemetry.ProviderRef{{Name: "envoy"}}}}}}, metav1.CreateOptions{}))
	must(ist.TelemetryV1().Telemetries(ns).Create(ctx, &telemetryv1.Telemetry{ObjectMeta: om("tel-v1"), Spec: telemetry.Telemetry{Selector: sel}}, metav1.CreateOptions{}))

	eventually(t, "every object in the snapshot", func() error {
		s := ctrl.Snapshot()
		for kind, got := range map[string][]string{
			"VirtualService":        names(s.VirtualServices, ns),
			"DestinationRule":       names(s.DestinationRules, ns),
			"Gateway":               names(s.Gateways, ns),
			"ServiceEntry":          names(s.ServiceEntries, ns),
			"Sidecar":               names(s.Sidecars, ns),
			"PeerAuthentication":    names(s.PeerAuthentications, ns),
			"AuthorizationPolicy":   names(s.AuthorizationPolicies, ns),
			"RequestAuthentication": names(s.RequestAuthentications, ns),
			"Telemetry":             names(s.Telemetries, ns),
		} {
			want := map[string]int{"VirtualService": 3, "DestinationRule": 3, "Gateway": 1, "ServiceEntry": 2, "Sidecar": 1,
				"PeerAuthentication": 2, "AuthorizationPolicy": 1, "RequestAuthentication": 1, "Telemetry": 2}[kind]
			if len(got) != want {
				return fmt.Errorf("%s: %v, want %d", kind, got, want)
			}
		}
		return nil
	})

	s := ctrl.Snapshot()
	// Specs survive the round trip through every version. (Configs are in
	// creation order, by name within a second: the order here is by name.)
	var hosts []string
	for _, v := range s.VirtualServices {
		if v.Namespace == ns {
			hosts = append(hosts, v.Spec.GetHosts()[0]+"="+v.Spec.GetHttp()[0].GetRoute()[0].GetDestination().GetHost())
			if v.Kind != model.KindVirtualService || v.Generation != 1 || v.ResourceVersion == "" || v.CreationTimestamp.IsZero() {
				t.Errorf("meta %+v", v.Meta)
			}
		}
	}
	slices.Sort(hosts)
	if !slices.Equal(hosts, []string{"a.example.com=a.example.com", "b.example.com=b.example.com", "c.example.com=c.example.com"}) {
		t.Errorf("virtual services %v", hosts)
	}
	for _, d := range s.DestinationRules {
		if d.Namespace == ns && d.Spec.GetSubsets()[0].GetLabels()["version"] != "v1" {
			t.Errorf("destination rule %s lost its subsets: %v", d.Name, d.Spec)
		}
	}
	for _, a := range s.AuthorizationPolicies {
		if a.Namespace == ns && (a.Spec.GetAction() != security.AuthorizationPolicy_DENY || a.Spec.GetRules()[0].GetTo()[0].GetOperation().GetPaths()[0] != "/admin") {
			t.Errorf("authorization policy %v", a.Spec)
		}
	}
	// ServiceEntry hosts are services, with their endpoints.
	api := inNamespace(s.ServicesByHost("api.example.com"), ns)
	if len(api) != 1 || api[0].FromServiceEntry != ns+"/se-v1beta1" || api[0].Resolution != model.DNSLB || !api[0].MeshExternal {
		t.Fatalf("api.example.com: %+v", api)
	}
	if eps := s.EndpointsOf(api[0]); len(eps) != 1 || eps[0].Address != "api.example.com" || eps[0].Port != 443 {
		t.Errorf("api.example.com endpoints %v", eps)
	}
	db := inNamespace(s.ServicesByHost("db.internal"), ns)
	if len(db) != 1 || db[0].MeshExternal || !slices.Equal(db[0].Addresses, []string{"240.240.0.1"}) {
		t.Fatalf("db.internal: %+v", db)
	}
	if eps := s.EndpointsOf(db[0]); len(eps) != 2 || eps[0].Address != "10.9.0.1" || eps[1].Address != "10.9.0.2" {
		t.Errorf("db.internal endpoints %v", eps)
	}
	if _, ok := rec.find(func(ch discovery.Change) bool {
		return ch.Kind == string(model.KindServiceEntry) && ch.Namespace == ns && ch.Name == "se-v1" && !ch.EndpointsOnly
	}); !ok {
		t.Error("no ServiceEntry change")
	}

	// Deleting through another version removes the object.
	if err := ist.NetworkingV1beta1().VirtualServices(ns).Delete(ctx, "vs-v1alpha3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted virtual service gone", func() error {
		got := names(ctrl.Snapshot().VirtualServices, ns)
		slices.Sort(got)
		if !slices.Equal(got, []string{"vs-v1", "vs-v1beta1"}) {
			return fmt.Errorf("virtual services %v", got)
		}
		return nil
	})
}
