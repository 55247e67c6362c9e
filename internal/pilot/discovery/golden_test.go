package discovery

import (
	"fmt"
	"sort"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/golden"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// bookinfo is a small mesh: a Deployment-backed Service with a ready and an
// unready pod, a headless Service, an ExternalName Service, a gateway with
// a mutual TLS credential, and ServiceEntries of every resolution.
func bookinfo() (kube []any, istio []any) {
	owner := func(rs string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, Controller: ptr.To(true)}}
	}
	pod := func(name, ip, sa, rs, hash string, ready bool, labels map[string]string) *corev1.Pod {
		labels["pod-template-hash"] = hash
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bookinfo", Labels: labels, OwnerReferences: owner(rs)},
			Spec: corev1.PodSpec{ServiceAccountName: sa},
			Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}}
	}
	slice := func(name, svc string, ports map[string]int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bookinfo",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}}, AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps}
		names := make([]string, 0, len(ports))
		for n := range ports {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(ports[n])})
		}
		return es
	}
	ep := func(ip, pod string, ready bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: "bookinfo"}}
	}
	kube = []any{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Labels: map[string]string{"istio-injection": "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-ingress"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "bookinfo", Labels: map[string]string{"app": "reviews"}},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.1.10", ClusterIPs: []string{"10.96.1.10"}, Selector: map[string]string{"app": "reviews"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 9080, TargetPort: intstr.FromInt32(9080)},
					{Name: "grpc-admin", Port: 9090, TargetPort: intstr.FromString("admin")}}}},
		pod("reviews-v1-6b9c7d-abcde", "10.1.1.1", "bookinfo-reviews", "reviews-v1-6b9c7d", "6b9c7d", true,
			map[string]string{"app": "reviews", "version": "v1", LabelTLSMode: TLSModeIstio}),
		pod("reviews-v2-5f7a9b-fghij", "10.1.1.2", "bookinfo-reviews", "reviews-v2-5f7a9b", "5f7a9b", false,
			map[string]string{"app": "reviews", "version": "v2"}),
		slice("reviews-x1", "reviews", map[string]int32{"http": 9080, "grpc-admin": 9443},
			ep("10.1.1.1", "reviews-v1-6b9c7d-abcde", true), ep("10.1.1.2", "reviews-v2-5f7a9b-fghij", false)),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "bookinfo",
			Annotations: map[string]string{AnnotationExportTo: "."}},
			Spec: corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}, Selector: map[string]string{"app": "db"},
				Ports: []corev1.ServicePort{{Name: "tcp-mysql", Port: 3306, TargetPort: intstr.FromInt32(3306)}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "bookinfo"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "legacy.example.com",
				Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo-cert", Namespace: "istio-ingress"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": []byte("CERT"), "tls.key": []byte("KEY")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo-cert-cacert", Namespace: "istio-ingress"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"cacert": []byte("CA")}},
	}
	istio = []any{
		&networkingv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: "bookinfo"}, Spec: networking.Gateway{
			Selector: map[string]string{"istio": "ingressgateway"},
			Servers: []*networking.Server{{Port: &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"}, Hosts: []string{"*"},
				Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_MUTUAL, CredentialName: "bookinfo-cert"}}}}},
		&networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "external-apis", Namespace: "bookinfo"}, Spec: networking.ServiceEntry{
			Hosts: []string{"api.example.com", "*.googleapis.com"}, Resolution: networking.ServiceEntry_DNS,
			Ports: []*networking.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}, ExportTo: []string{"*"}}},
		&networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "vms", Namespace: "bookinfo"}, Spec: networking.ServiceEntry{
			Hosts: []string{"ratings.vm.internal"}, Addresses: []string{"240.0.0.10"}, Location: networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_STATIC, Ports: []*networking.ServicePort{{Number: 9080, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
			Endpoints: []*networking.WorkloadEntry{{Address: "192.168.0.7", Labels: map[string]string{"app": "ratings", LabelTLSMode: TLSModeIstio},
				ServiceAccount: "ratings-vm", Network: "vm-network", Weight: 2}}}},
	}
	return kube, istio
}

// snapshotView is the readable part of a snapshot for golden files.
type snapshotView struct {
	Version         string
	RootNamespace   string
	TrustDomain     string
	Services        []*model.Service
	Endpoints       map[string][]*model.Endpoint
	NamespaceLabels map[string]map[string]string
	Configs         []string
	Credentials     map[string]map[string]string
}

func view(p *model.PushContext) snapshotView {
	v := snapshotView{Version: p.Version, RootNamespace: p.RootNamespace, TrustDomain: p.TrustDomain, Services: p.Services,
		Endpoints: p.Endpoints, NamespaceLabels: p.NamespaceLabels, Credentials: map[string]map[string]string{}}
	add := func(kind model.Kind, keys ...string) {
		for _, k := range keys {
			v.Configs = append(v.Configs, fmt.Sprintf("%s %s", kind, k))
		}
	}
	for _, c := range p.Gateways {
		add(c.Kind, c.Key())
	}
	for _, c := range p.ServiceEntries {
		add(c.Kind, c.Key())
	}
	for k, c := range p.Credentials {
		v.Credentials[k] = map[string]string{"cert": string(c.CertChain), "key": string(c.PrivateKey), "ca": string(c.CACert)}
	}
	return v
}

// TestSnapshotGolden keeps the model of the bookinfo objects in
// testdata/bookinfo.yaml (go test -run SnapshotGolden -update rewrites it).
func TestSnapshotGolden(t *testing.T) {
	kube, istio := bookinfo()
	c, _, _, _ := fakeController(t, kube, istio)
	out, err := yaml.Marshal(view(c.Snapshot()))
	if err != nil {
		t.Fatal(err)
	}
	golden.AssertYAML(t, "testdata/bookinfo.yaml", out)
}
