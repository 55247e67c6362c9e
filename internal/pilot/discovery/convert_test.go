package discovery

import (
	"reflect"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func TestConvertService(t *testing.T) {
	base := func(mut func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default", Labels: map[string]string{"app": "reviews"}},
			Spec: corev1.ServiceSpec{
				ClusterIP:  "10.0.0.5",
				ClusterIPs: []string{"10.0.0.5"},
				Selector:   map[string]string{"app": "reviews"},
				Ports: []corev1.ServicePort{
					{Name: "http-web", Port: 9080, TargetPort: intstr.FromInt32(8080)},
					{Name: "db", Port: 5432, AppProtocol: ptr.To("tcp"), TargetPort: intstr.FromString("pg")},
				},
			},
		}
		if mut != nil {
			mut(s)
		}
		return s
	}
	ports := []model.Port{
		{Name: "http-web", Port: 9080, Protocol: model.ProtocolHTTP, TargetPort: 8080},
		{Name: "db", Port: 5432, Protocol: model.ProtocolTCP},
	}
	tests := []struct {
		name string
		svc  *corev1.Service
		want *model.Service
	}{{
		name: "cluster IP",
		svc:  base(nil),
		want: &model.Service{Hostname: "reviews.default.svc.cluster.local", Name: "reviews", Namespace: "default",
			Ports: ports, Addresses: []string{"10.0.0.5"}, Labels: map[string]string{"app": "reviews"},
			Selector: map[string]string{"app": "reviews"}},
	}, {
		name: "headless is passthrough without addresses",
		svc:  base(func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
		want: &model.Service{Hostname: "reviews.default.svc.cluster.local", Name: "reviews", Namespace: "default",
			Ports: ports, Resolution: model.Passthrough, Labels: map[string]string{"app": "reviews"},
			Selector: map[string]string{"app": "reviews"}},
	}, {
		name: "exportTo annotation, no selector",
		svc: base(func(s *corev1.Service) {
			s.Annotations = map[string]string{AnnotationExportTo: " ., istio-system "}
			s.Spec.Selector = nil
		}),
		want: &model.Service{Hostname: "reviews.default.svc.cluster.local", Name: "reviews", Namespace: "default",
			Ports: ports, Addresses: []string{"10.0.0.5"}, Labels: map[string]string{"app": "reviews"},
			ExportTo: []string{".", "istio-system"}},
	}, {
		name: "external name",
		svc: base(func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "db.example.com", "", nil
		}),
		want: &model.Service{Hostname: "reviews.default.svc.cluster.local", Name: "reviews", Namespace: "default",
			Ports: ports, Resolution: model.DNSLB, MeshExternal: true, Labels: map[string]string{"app": "reviews"},
			Selector: map[string]string{"app": "reviews"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := convertService(tt.svc, "cluster.local")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestWorkloadName(t *testing.T) {
	ctrl := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
	}
	tests := []struct {
		name   string
		owners []metav1.OwnerReference
		labels map[string]string
		want   string
	}{
		{"deployment", ctrl("ReplicaSet", "reviews-v1-5d8f7c"), map[string]string{labelPodTemplate: "5d8f7c"}, "reviews-v1"},
		{"bare replicaset", ctrl("ReplicaSet", "rs"), nil, "rs"},
		{"statefulset", ctrl("StatefulSet", "db"), nil, "db"},
		{"cronjob", ctrl("Job", "backup-28812345"), nil, "backup"},
		{"job", ctrl("Job", "migrate"), nil, "migrate"},
		{"no controller", []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "x"}}, nil, "pod-1"},
		{"bare pod", nil, nil, "pod-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-1", OwnerReferences: tt.owners, Labels: tt.labels}}
			if got := workloadName(pod); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestServiceEndpoints(t *testing.T) {
	svc := &model.Service{Hostname: "reviews.default.svc.cluster.local", Name: "reviews", Namespace: "default",
		Ports: []model.Port{{Name: "http", Port: 9080}, {Name: "grpc", Port: 9090}}}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "reviews-abc", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080)},
			{Name: ptr.To("metrics"), Port: ptr.To[int32](15090)}, // not a service port
		},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "reviews-2"}},
			{Addresses: []string{"10.1.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "reviews-1", Namespace: "default"}},
		},
	}
	// The same pod in a second slice (while slices are rewritten) counts once.
	dup := es.DeepCopy()
	dup.Endpoints = dup.Endpoints[1:]
	pods := map[string]*podInfo{
		"default/reviews-1": {Name: "reviews-1", Namespace: "default", ServiceAccount: "bookinfo-reviews", WorkloadName: "reviews-v1",
			Labels: map[string]string{"app": "reviews", LabelTLSMode: "istio"}},
	}
	got := serviceEndpoints(svc, []*sliceInfo{newSliceInfo(es), newSliceInfo(dup)}, pods)
	want := []*model.Endpoint{
		{Address: "10.1.0.1", Port: 8080, ServicePort: 9080, Namespace: "default", ServiceAccount: "bookinfo-reviews",
			PodName: "reviews-1", WorkloadName: "reviews-v1", TLSMode: "istio", Ready: true,
			Labels: map[string]string{"app": "reviews", LabelTLSMode: "istio"}},
		{Address: "10.1.0.2", Port: 8080, ServicePort: 9080, Namespace: "default", TLSMode: TLSModeDisabled},
	}
	if !reflect.DeepEqual(got, want) {
		for _, e := range got {
			t.Logf("got %+v", *e)
		}
		t.Fatal("endpoints differ")
	}
	if si := newSliceInfo(&discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4}); si != nil {
		t.Errorf("a slice without the service-name label belongs to no service, got %+v", si)
	}
}

func TestConvertServiceEntry(t *testing.T) {
	cfg := func(se *networking.ServiceEntry) model.Config[*networking.ServiceEntry] {
		return model.Config[*networking.ServiceEntry]{Meta: model.Meta{Kind: model.KindServiceEntry, Name: "ext", Namespace: "ns1"}, Spec: se}
	}
	pods := []*podInfo{
		{Name: "vm-1", Namespace: "ns1", IPs: []string{"10.2.0.1"}, Labels: map[string]string{"app": "vm"}, Ready: true, ServiceAccount: "vm"},
		{Name: "vm-2", Namespace: "other", IPs: []string{"10.2.0.2"}, Labels: map[string]string{"app": "vm"}, Ready: true},
	}
	tests := []struct {
		name     string
		se       *networking.ServiceEntry
		wantSvcs []*model.Service
		wantEps  map[string][]*model.Endpoint
	}{{
		name: "DNS without endpoints resolves the host",
		se: &networking.ServiceEntry{Hosts: []string{"api.example.com", "*.wild.com"}, Location: networking.ServiceEntry_MESH_EXTERNAL,
			Resolution: networking.ServiceEntry_DNS, Ports: []*networking.ServicePort{{Number: 443, Name: "https", Protocol: "HTTPS"}},
			ExportTo: []string{"."}},
		wantSvcs: []*model.Service{
			{Hostname: "api.example.com", Name: "ext", Namespace: "ns1", Ports: []model.Port{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS}},
				Resolution: model.DNSLB, MeshExternal: true, ExportTo: []string{"."}, FromServiceEntry: "ns1/ext"},
			{Hostname: "*.wild.com", Name: "ext", Namespace: "ns1", Ports: []model.Port{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS}},
				Resolution: model.DNSLB, MeshExternal: true, ExportTo: []string{"."}, FromServiceEntry: "ns1/ext"},
		},
		wantEps: map[string][]*model.Endpoint{"api.example.com/ns1": {
			{Address: "api.example.com", Port: 443, ServicePort: 443, Namespace: "ns1", TLSMode: TLSModeDisabled, Ready: true}}},
	}, {
		name: "static endpoints with port map",
		se: &networking.ServiceEntry{Hosts: []string{"db.internal"}, Addresses: []string{"240.0.0.1"}, Resolution: networking.ServiceEntry_STATIC,
			Ports: []*networking.ServicePort{{Number: 5432, Name: "tcp-pg", Protocol: "TCP", TargetPort: 15432}},
			Endpoints: []*networking.WorkloadEntry{
				{Address: "10.3.0.2", Ports: map[string]uint32{"tcp-pg": 6432}, Labels: map[string]string{LabelTLSMode: "istio"}, ServiceAccount: "db", Weight: 3},
				{Address: "10.3.0.1"},
			}},
		wantSvcs: []*model.Service{{Hostname: "db.internal", Name: "ext", Namespace: "ns1", Addresses: []string{"240.0.0.1"},
			Ports: []model.Port{{Name: "tcp-pg", Port: 5432, Protocol: model.ProtocolTCP, TargetPort: 15432}}, FromServiceEntry: "ns1/ext",
			MeshExternal: true}}, // location defaults to MESH_EXTERNAL
		wantEps: map[string][]*model.Endpoint{"db.internal/ns1": {
			{Address: "10.3.0.1", Port: 15432, ServicePort: 5432, Namespace: "ns1", TLSMode: TLSModeDisabled, Ready: true},
			{Address: "10.3.0.2", Port: 6432, ServicePort: 5432, Namespace: "ns1", TLSMode: "istio", Ready: true, ServiceAccount: "db", Weight: 3,
				Labels: map[string]string{LabelTLSMode: "istio"}}}},
	}, {
		name: "workload selector picks pods of its namespace",
		se: &networking.ServiceEntry{Hosts: []string{"vm.internal"}, Resolution: networking.ServiceEntry_STATIC, Location: networking.ServiceEntry_MESH_INTERNAL,
			Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "vm"}}},
		wantSvcs: []*model.Service{{Hostname: "vm.internal", Name: "ext", Namespace: "ns1", Selector: map[string]string{"app": "vm"},
			Ports: []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}}, FromServiceEntry: "ns1/ext"}},
		wantEps: map[string][]*model.Endpoint{"vm.internal/ns1": {
			{Address: "10.2.0.1", Port: 80, ServicePort: 80, Namespace: "ns1", PodName: "vm-1", ServiceAccount: "vm", TLSMode: TLSModeDisabled,
				Ready: true, Labels: map[string]string{"app": "vm"}}}},
	}, {
		name: "resolution NONE is passthrough",
		se:   &networking.ServiceEntry{Hosts: []string{"any.example.com"}, Resolution: networking.ServiceEntry_NONE},
		wantSvcs: []*model.Service{{Hostname: "any.example.com", Name: "ext", Namespace: "ns1", Resolution: model.Passthrough,
			MeshExternal: true, FromServiceEntry: "ns1/ext"}},
		wantEps: map[string][]*model.Endpoint{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, eps := convertServiceEntry(cfg(tt.se), pods)
			for _, s := range svcs {
				if len(s.Addresses) == 0 {
					s.Addresses = nil
				}
				if len(s.ExportTo) == 0 {
					s.ExportTo = nil
				}
			}
			if !reflect.DeepEqual(svcs, tt.wantSvcs) {
				for _, s := range svcs {
					t.Logf("got %+v", *s)
				}
				t.Error("services differ")
			}
			if !reflect.DeepEqual(eps, tt.wantEps) {
				for k, l := range eps {
					for _, e := range l {
						t.Logf("got %s: %+v", k, *e)
					}
				}
				t.Error("endpoints differ")
			}
		})
	}
}

func TestBuildCredentials(t *testing.T) {
	secret := func(ns, name string, typ corev1.SecretType, data map[string]string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ, Data: map[string][]byte{}}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		return stripSecret(s)
	}
	secrets := map[string]*corev1.Secret{}
	for _, s := range []*corev1.Secret{
		secret("gw", "tls", corev1.SecretTypeTLS, map[string]string{"tls.crt": "C", "tls.key": "K", "other": "dropped"}),
		secret("gw", "mtls", corev1.SecretTypeTLS, map[string]string{"tls.crt": "C2", "tls.key": "K2"}),
		secret("gw", "mtls-cacert", corev1.SecretTypeOpaque, map[string]string{"ca.crt": "CA2"}),
		secret("gw", "generic", corev1.SecretTypeOpaque, map[string]string{"cert": "C3", "key": "K3", "cacert": "CA3"}),
		secret("gw", "unreferenced", corev1.SecretTypeTLS, map[string]string{"tls.crt": "C4", "tls.key": "K4"}),
		secret("gw", "token", corev1.SecretTypeServiceAccountToken, map[string]string{"tls.crt": "never"}),
		secret("other", "tls", corev1.SecretTypeTLS, map[string]string{"tls.crt": "C5", "tls.key": "K5"}),
	} {
		secrets[s.Namespace+"/"+s.Name] = s
	}
	if secrets["gw/tls"].Data["other"] != nil || secrets["gw/token"].Data != nil {
		t.Fatal("stripSecret kept data discovery never reads")
	}
	gws := []model.Config[*networking.Gateway]{{Spec: &networking.Gateway{Servers: []*networking.Server{
		{Tls: &networking.ServerTLSSettings{CredentialName: "tls"}},
		{Tls: &networking.ServerTLSSettings{CredentialName: "kubernetes://mtls"}},
		{Tls: &networking.ServerTLSSettings{CredentialNames: []string{"generic", "token"}}},
	}}}}
	got := buildCredentials(credentialNames(gws), secrets)
	want := map[string]*model.Credential{
		"gw/tls":     {Namespace: "gw", Name: "tls", CertChain: []byte("C"), PrivateKey: []byte("K")},
		"gw/mtls":    {Namespace: "gw", Name: "mtls", CertChain: []byte("C2"), PrivateKey: []byte("K2"), CACert: []byte("CA2")},
		"gw/generic": {Namespace: "gw", Name: "generic", CertChain: []byte("C3"), PrivateKey: []byte("K3"), CACert: []byte("CA3")},
		"other/tls":  {Namespace: "other", Name: "tls", CertChain: []byte("C5"), PrivateKey: []byte("K5")},
	}
	if !reflect.DeepEqual(got, want) {
		for k, v := range got {
			t.Logf("got %s: %+v", k, *v)
		}
		t.Fatal("credentials differ")
	}
}

// stripPod keeps what discovery reads and nothing else (managed fields,
// env, volumes, images, most of the status), to keep 2000 pods small.
func TestStripPod(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", Labels: map[string]string{"app": "a"},
			Annotations:     map[string]string{"big": strings.Repeat("x", 1000)},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "a-1", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", NodeName: "n1",
			Volumes: []corev1.Volume{{Name: "v"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "img", Env: []corev1.EnvVar{{Name: "A", Value: "B"}},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}}},
				{Name: "istio-proxy", Image: "proxy"},
			}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue, Message: "m"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app"}}},
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", Labels: map[string]string{"app": "a"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "a-1", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", NodeName: "n1",
			Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	got := stripPod(pod)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if p := newPodInfo(got); !p.Ready || p.WorkloadName != "a-1" || p.ContainerPorts["http"] != 8080 || p.ServiceAccount != "sa" {
		t.Errorf("pod info %+v", p)
	}
}

func TestInRevision(t *testing.T) {
	tests := []struct {
		labels map[string]string
		rev    string
		want   bool
	}{
		{nil, "", true},
		{nil, "canary", true},
		{map[string]string{LabelRevision: "canary"}, "canary", true},
		{map[string]string{LabelRevision: "canary"}, "", false},
		{map[string]string{LabelRevision: "default"}, "", true},
		{map[string]string{LabelRevision: ""}, "default", true},
		{map[string]string{LabelRevision: "default"}, "canary", false},
	}
	for _, tt := range tests {
		if got := inRevision(tt.labels, tt.rev); got != tt.want {
			t.Errorf("inRevision(%v, %q) = %v, want %v", tt.labels, tt.rev, got, tt.want)
		}
	}
}
