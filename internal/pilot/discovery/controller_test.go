package discovery

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// fakeController runs a Controller on fake clientsets holding objs.
func fakeController(t *testing.T, kubeObjs []any, istioObjs []any) (*Controller, *fake.Clientset, *istiofake.Clientset, *record.FakeRecorder) {
	t.Helper()
	kube := fake.NewClientset()
	ist := istiofake.NewSimpleClientset()
	ctx, cancel := context.WithCancel(context.Background())
	for _, o := range kubeObjs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = kube.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = kube.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = kube.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Secret:
			_, err = kube.CoreV1().Secrets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Namespace:
			_, err = kube.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("unhandled %T", o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range istioObjs {
		switch o := o.(type) {
		case *networkingv1.Gateway:
			if _, err := ist.NetworkingV1().Gateways(o.Namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case *networkingv1.ServiceEntry:
			if _, err := ist.NetworkingV1().ServiceEntries(o.Namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unhandled %T", o)
		}
	}
	rec := record.NewFakeRecorder(100)
	c, err := New(Options{Kube: kube, Istio: ist, Namespace: "istio-system", Recorder: rec,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	waitFor(t, "sync", func() bool { return c.HasSynced() })
	return c, kube, ist, rec
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testObjects() []any {
	return []any{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{"istio-injection": "enabled"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app"}, Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "app", Labels: map[string]string{"app": "web", LabelTLSMode: "istio"}},
			Spec:   corev1.PodSpec{ServiceAccountName: "web"},
			Status: corev1.PodStatus{PodIP: "10.1.0.1", PodIPs: []corev1.PodIP{{IP: "10.1.0.1"}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-x", Namespace: "app", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1", Namespace: "app"}}}},
		// The ingress gateway: its Service maps 443 to the named port https.
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: "gw"}, Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.20", Selector: map[string]string{"istio": "ingressgateway"},
			Ports: []corev1.ServicePort{{Name: "http2", Port: 80, TargetPort: intstr.FromInt32(8080)},
				{Name: "https", Port: 443, TargetPort: intstr.FromString("https")}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ingress-1", Namespace: "gw", Labels: map[string]string{"istio": "ingressgateway"}},
			Spec: corev1.PodSpec{ServiceAccountName: "ingress", Containers: []corev1.Container{{Name: "proxy",
				Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: 8443}}}}},
			Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.1.0.9"}}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-cert", Namespace: "gw"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": []byte("CERT"), "tls.key": []byte("KEY")}},
	}
}

func gatewayObject() *networkingv1.Gateway {
	return &networkingv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "gw"}, Spec: networking.Gateway{
		Selector: map[string]string{"istio": "ingressgateway"},
		Servers: []*networking.Server{{Port: &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"}, Hosts: []string{"*"},
			Tls: &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: "web-cert"}}},
	}}
}

func TestControllerSnapshot(t *testing.T) {
	c, kube, _, _ := fakeController(t, testObjects(), []any{gatewayObject()})
	var mu sync.Mutex
	var changes []Change
	c.Subscribe(func(ch Change) { mu.Lock(); changes = append(changes, ch); mu.Unlock() })

	s1 := c.Snapshot()
	if s1.RootNamespace != "istio-system" || s1.Mesh.GetRootNamespace() != "istio-system" || s1.TrustDomain != "cluster.local" {
		t.Errorf("root namespace %q / %q, trust domain %q", s1.RootNamespace, s1.Mesh.GetRootNamespace(), s1.TrustDomain)
	}
	web := s1.ServicesByHost("web.app.svc.cluster.local")
	if len(web) != 1 {
		t.Fatalf("services %v", s1.Services)
	}
	eps := s1.EndpointsOf(web[0])
	if len(eps) != 1 || eps[0].Address != "10.1.0.1" || eps[0].ServiceAccount != "web" || eps[0].TLSMode != "istio" || !eps[0].Ready {
		t.Fatalf("endpoints %+v", eps)
	}
	if s1.NamespaceLabels["app"]["istio-injection"] != "enabled" {
		t.Errorf("namespace labels %v", s1.NamespaceLabels)
	}
	if cr := s1.Credentials["gw/web-cert"]; cr == nil || string(cr.CertChain) != "CERT" || string(cr.PrivateKey) != "KEY" {
		t.Errorf("credentials %v", s1.Credentials)
	}
	if s2 := c.Snapshot(); s2 != s1 {
		t.Error("a snapshot without changes is rebuilt")
	}

	// A pod relabelled: an endpoints-only change for the service it backs;
	// the new snapshot shares the unchanged service list.
	pod, _ := kube.CoreV1().Pods("app").Get(context.Background(), "web-1", metav1.GetOptions{})
	pod.Labels["version"] = "v2"
	if _, err := kube.CoreV1().Pods("app").Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := Change{Kind: KindPod, Namespace: "app", Name: "web-1", EndpointsOnly: true, Hostnames: []string{"web.app.svc.cluster.local"}}
	waitFor(t, "the pod change", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range changes {
			if reflect.DeepEqual(ch, want) {
				return true
			}
		}
		return false
	})
	s3 := c.Snapshot()
	if s3.Version == s1.Version {
		t.Errorf("version %s did not change", s3.Version)
	}
	if &s3.Services[0] != &s1.Services[0] {
		t.Error("the service list was rebuilt for an endpoint change")
	}
	if got := s3.EndpointsOf(web[0])[0].Labels["version"]; got != "v2" {
		t.Errorf("endpoint labels not updated: %v", s3.EndpointsOf(web[0])[0].Labels)
	}
	if s1.EndpointsOf(web[0])[0].Labels["version"] != "" {
		t.Error("an old snapshot changed")
	}

	// A service change is not endpoints-only.
	svc, _ := kube.CoreV1().Services("app").Get(context.Background(), "web", metav1.GetOptions{})
	svc.Annotations = map[string]string{AnnotationExportTo: "."}
	if _, err := kube.CoreV1().Services("app").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the service change", func() bool {
		mu.Lock()
		defer mu.Unlock()
		ch := changes[len(changes)-1]
		return ch.Kind == KindService && ch.Name == "web" && !ch.EndpointsOnly
	})
	if got := c.Snapshot().ServicesByHost("web.app.svc.cluster.local")[0].ExportTo; !reflect.DeepEqual(got, []string{"."}) {
		t.Errorf("exportTo %v", got)
	}
}

func node(id string, md map[string]any) *corev3.Node {
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	return &corev3.Node{Id: id, Metadata: s}
}

func TestBuildProxy(t *testing.T) {
	c, _, _, _ := fakeController(t, testObjects(), nil)
	tests := []struct {
		name       string
		node       *corev3.Node
		ns, sa     string
		want       *model.Proxy
		wantErr    string
		ignoreMeta bool
	}{{
		name: "sidecar of an existing pod: labels and IPs from the pod",
		node: node("sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", map[string]any{
			"NAMESPACE": "app", "NAME": "web-1", "SERVICE_ACCOUNT": "web", "LABELS": `{"app":"spoofed"}`}),
		ns: "app", sa: "web",
		want: &model.Proxy{ID: "sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", Type: model.SidecarProxy, IPs: []string{"10.1.0.1"},
			PodName: "web-1", Namespace: "app", ServiceAccount: "web", Labels: map[string]string{"app": "web", LabelTLSMode: "istio"},
			WorkloadName: "web-1", ConfigNamespace: "app", InterceptionMode: model.InterceptionRedirect},
		ignoreMeta: true,
	}, {
		name: "no pod: labels and IPs from the node, NONE mode binds",
		node: node("sidecar~127.0.0.2~vm-1.app~app.svc.cluster.local", map[string]any{
			"ISTIO_META_LABELS": `{"app":"vm"}`, "INSTANCE_IPS": "127.0.0.2,::1", "INTERCEPTION_MODE": "NONE",
			"APP_ADDRESS": "127.0.0.3", "WORKLOAD_NAME": "vm"}),
		ns: "app", sa: "vm",
		want: &model.Proxy{ID: "sidecar~127.0.0.2~vm-1.app~app.svc.cluster.local", Type: model.SidecarProxy, IPs: []string{"127.0.0.2", "::1"},
			PodName: "vm-1", Namespace: "app", ServiceAccount: "vm", Labels: map[string]string{"app": "vm"}, WorkloadName: "vm",
			ConfigNamespace: "app", InterceptionMode: model.InterceptionNone, InboundBindAddress: "127.0.0.2",
			OutboundBindAddress: "127.0.0.1", AppAddress: "127.0.0.3"},
		ignoreMeta: true,
	}, {
		name: "router gets the port map of its Service",
		node: node("router~10.1.0.9~ingress-1.gw~gw.svc.cluster.local", map[string]any{"GATEWAY_NAME": "ingress"}),
		ns:   "gw", sa: "ingress",
		want: &model.Proxy{ID: "router~10.1.0.9~ingress-1.gw~gw.svc.cluster.local", Type: model.Router, IPs: []string{"10.1.0.9"},
			PodName: "ingress-1", Namespace: "gw", ServiceAccount: "ingress", Labels: map[string]string{"istio": "ingressgateway"},
			WorkloadName: "ingress-1", ConfigNamespace: "gw", InterceptionMode: model.InterceptionRedirect,
			GatewayPortMap: map[uint32]uint32{80: 8080, 443: 8443}},
		ignoreMeta: true,
	}, {
		name: "namespace differs from the certificate",
		node: node("sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", nil),
		ns:   "other", sa: "web",
		wantErr: `node namespace "app" does not match the certificate's namespace "other"`,
	}, {
		name: "service account differs from the certificate",
		node: node("sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", map[string]any{"SERVICE_ACCOUNT": "admin"}),
		ns:   "app", sa: "web",
		wantErr: `node service account "admin" does not match the certificate's "web"`,
	}, {
		name: "the pod runs as another service account",
		node: node("sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", map[string]any{"SERVICE_ACCOUNT": "other"}),
		ns:   "app", sa: "other",
		wantErr: `pod app/web-1 runs as service account "web", not the certificate's "other"`,
	}, {
		name: "metadata namespace differs from the id",
		node: node("sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", map[string]any{"NAMESPACE": "kube-system"}),
		ns:   "app", sa: "web",
		wantErr: `node id names namespace "app" but its metadata "kube-system"`,
	}, {
		name: "bad id",
		node: node("sidecar~10.1.0.1~web-1", nil),
		ns:   "app", sa: "web",
		wantErr: "is not type~ip~pod.namespace~namespace.svc.domain",
	}, {
		name: "bad type",
		node: node("ztunnel~10.1.0.1~web-1.app~app.svc.cluster.local", nil),
		ns:   "app", sa: "web",
		wantErr: `type "ztunnel"`,
	}, {
		name:    "no certificate identity",
		node:    node("sidecar~10.1.0.1~web-1.app~app.svc.cluster.local", nil),
		wantErr: "no client certificate identity",
	}, {
		name: "bad labels",
		node: node("sidecar~10.1.0.5~nopod.app~app.svc.cluster.local", map[string]any{"LABELS": "app=web"}),
		ns:   "app", sa: "web",
		wantErr: "LABELS is not a JSON object",
	}, {
		name: "bad interception mode",
		node: node("sidecar~10.1.0.5~nopod.app~app.svc.cluster.local", map[string]any{"INTERCEPTION_MODE": "TPROXY"}),
		ns:   "app", sa: "web",
		wantErr: `INTERCEPTION_MODE "TPROXY"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.BuildProxy(tt.node, tt.ns, tt.sa)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.ignoreMeta {
				got.Metadata = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSubscriberQueueCollapses(t *testing.T) {
	s := &subscriber{wake: make(chan struct{}, 1)}
	for i := 0; i < queueLimit+10; i++ {
		s.push(Change{Kind: KindPod, Name: "p"})
	}
	if len(s.q) != 1 || s.q[0].Kind != KindFull {
		t.Fatalf("queue of %d, first %+v; want one %s change", len(s.q), s.q[0], KindFull)
	}
}

func TestReportInvalidDeduplicates(t *testing.T) {
	c, _, ist, rec := fakeController(t, nil, []any{gatewayObject()})
	waitFor(t, "the gateway", func() bool { return len(c.Snapshot().Gateways) == 1 })
	for range 3 {
		c.ReportInvalid(model.KindGateway, "gw", "web", "server 0: no hosts")
	}
	c.ReportInvalid(model.KindGateway, "gw", "missing", "not reported: unknown object")
	c.ReportInvalid(model.KindGateway, "gw", "web", "server 1: duplicate port")
	want := []string{"Warning InvalidConfig server 0: no hosts", "Warning InvalidConfig server 1: duplicate port"}
	for _, w := range want {
		select {
		case got := <-rec.Events:
			if got != w {
				t.Errorf("event %q, want %q", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event %q", w)
		}
	}
	select {
	case got := <-rec.Events:
		t.Errorf("unexpected event %q", got)
	default:
	}
	// A new generation of the object is reported again.
	gw, _ := ist.NetworkingV1().Gateways("gw").Get(context.Background(), "web", metav1.GetOptions{})
	gw.Generation = 2
	if _, err := ist.NetworkingV1().Gateways("gw").Update(context.Background(), gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new generation", func() bool { return c.Snapshot().Gateways[0].Generation == 2 })
	c.ReportInvalid(model.KindGateway, "gw", "web", "server 1: duplicate port")
	select {
	case <-rec.Events:
	case <-time.After(5 * time.Second):
		t.Fatal("a new generation was not reported")
	}
}

// A canary control plane sees the objects of its revision and unlabelled
// ones; one relabelled to another revision leaves its snapshots.
func TestRevisionFiltersConfigs(t *testing.T) {
	gw := func(name, rev string) *networkingv1.Gateway {
		g := gatewayObject()
		g.Name = name
		if rev != "" {
			g.Labels = map[string]string{LabelRevision: rev}
		}
		return g
	}
	kube := fake.NewClientset()
	ist := istiofake.NewSimpleClientset()
	for _, g := range []*networkingv1.Gateway{gw("all", ""), gw("canary", "canary"), gw("stable", "default")} {
		if _, err := ist.NetworkingV1().Gateways(g.Namespace).Create(context.Background(), g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(Options{Kube: kube, Istio: ist, Namespace: "istio-system", Revision: "canary",
		Recorder: record.NewFakeRecorder(10), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "sync", c.HasSynced)
	if got := names(c.Snapshot().Gateways); !reflect.DeepEqual(got, []string{"all", "canary"}) {
		t.Fatalf("gateways %v", got)
	}
	g, _ := ist.NetworkingV1().Gateways("gw").Get(ctx, "canary", metav1.GetOptions{})
	g.Labels[LabelRevision] = "default"
	if _, err := ist.NetworkingV1().Gateways("gw").Update(ctx, g, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relabelled gateway gone", func() bool { return reflect.DeepEqual(names(c.Snapshot().Gateways), []string{"all"}) })
}

func names[T any](cfgs []model.Config[T]) []string {
	var out []string
	for _, c := range cfgs {
		out = append(out, c.Name)
	}
	return out
}
