package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

func node(t *testing.T, typ, ip, pod, ns string, md map[string]any) *corev3.Node {
	t.Helper()
	s, err := structpb.NewStruct(md)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", typ, ip, pod, ns, ns), Metadata: s}
}

// createPod creates a pod running as sa and waits until kwok reports its IP
// and discovery has seen it.
func createPod(t *testing.T, ns, name, sa string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10", Ports: ports}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	eventually(t, "the pod's IP", func() error {
		var err error
		if pod, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return err
		}
		if pod.Status.PodIP == "" {
			return fmt.Errorf("no IP yet")
		}
		// Discovery has the pod once BuildProxy reports its IP.
		p, err := ctrl.BuildProxy(node(t, "sidecar", "127.0.0.1", name, ns, nil), ns, sa)
		if err != nil {
			return err
		}
		if !slices.Equal(p.IPs, []string{pod.Status.PodIP}) {
			return fmt.Errorf("discovery sees IPs %v, the pod has %s", p.IPs, pod.Status.PodIP)
		}
		return nil
	})
	return pod
}

// BuildProxy trusts the certificate's identity, checks the node against it
// and against the pod, and takes the pod's labels and IPs.
func TestBuildProxyChecksIdentity(t *testing.T) {
	ns := createNamespace(t, "proxy")
	pod := createPod(t, ns, "productpage-1", "bookinfo-productpage", map[string]string{"app": "productpage", "version": "v1"})

	// The node claims other labels and IPs: the pod wins.
	p, err := ctrl.BuildProxy(node(t, "sidecar", "10.255.0.1", "productpage-1", ns, map[string]any{
		"NAMESPACE": ns, "NAME": "productpage-1", "SERVICE_ACCOUNT": "bookinfo-productpage",
		"LABELS": `{"app":"admin"}`, "INSTANCE_IPS": "10.255.0.1"}), ns, "bookinfo-productpage")
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels["app"] != "productpage" || p.Labels["version"] != "v1" || !slices.Equal(p.IPs, []string{pod.Status.PodIP}) ||
		p.Namespace != ns || p.ServiceAccount != "bookinfo-productpage" || p.Type != model.SidecarProxy || p.ConfigNamespace != ns {
		t.Errorf("proxy %+v", p)
	}

	// INTERCEPTION_MODE NONE (tests on loopback): the proxy binds the
	// addresses it reports, not the pod's fake IP.
	p, err = ctrl.BuildProxy(node(t, "sidecar", "127.0.0.5", "productpage-1", ns, map[string]any{
		"INTERCEPTION_MODE": "NONE", "INSTANCE_IPS": "127.0.0.5", "OUTBOUND_BIND_ADDRESS": "127.0.0.6"}), ns, "bookinfo-productpage")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.IPs, []string{"127.0.0.5"}) || p.InboundBindAddress != "127.0.0.5" || p.OutboundBindAddress != "127.0.0.6" ||
		p.AppAddress != "127.0.0.1" || p.Labels["app"] != "productpage" {
		t.Errorf("proxy with interception NONE %+v", p)
	}

	for _, tt := range []struct {
		name      string
		node      *corev3.Node
		certNS    string
		certSA    string
		wantError string
	}{
		{"certificate of another namespace", node(t, "sidecar", "10.0.0.1", "productpage-1", ns, nil), "default", "bookinfo-productpage",
			"does not match the certificate's namespace"},
		{"node claims another service account", node(t, "sidecar", "10.0.0.1", "productpage-1", ns, map[string]any{"SERVICE_ACCOUNT": "admin"}),
			ns, "bookinfo-productpage", `node service account "admin" does not match the certificate's "bookinfo-productpage"`},
		{"certificate of another service account for this pod", node(t, "sidecar", "10.0.0.1", "productpage-1", ns, nil), ns, "attacker",
			`runs as service account "bookinfo-productpage", not the certificate's "attacker"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ctrl.BuildProxy(tt.node, tt.certNS, tt.certSA)
			if err == nil || !strings.Contains(err.Error(), tt.wantError) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantError)
			}
		})
	}

	// A proxy without a pod (a VM, a test process) is described by its node.
	p, err = ctrl.BuildProxy(node(t, "sidecar", "127.0.0.9", "vm-1", ns, map[string]any{"LABELS": `{"app":"vm"}`}), ns, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if p.Labels["app"] != "vm" || !slices.Equal(p.IPs, []string{"127.0.0.9"}) || p.WorkloadName != "vm-1" {
		t.Errorf("proxy without a pod %+v", p)
	}
}

// A gateway learns the ports it listens on from the Service that selects it:
// numeric target ports, and named ones resolved on the pod.
func TestBuildProxyGatewayPorts(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "gateway")
	labels := map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"istio": "ingressgateway"}, Ports: []corev1.ServicePort{
			{Name: "http2", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "https", Port: 443, TargetPort: intstr.FromString("https")},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A Service of the namespace that does not select the gateway.
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "other"}, Ports: []corev1.ServicePort{{Name: "tcp", Port: 9000}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, ns, "ingress-1", "istio-ingressgateway", labels, corev1.ContainerPort{Name: "https", ContainerPort: 8443})
	eventually(t, "the gateway's port map", func() error {
		p, err := ctrl.BuildProxy(node(t, "router", "10.0.0.1", "ingress-1", ns, map[string]any{"GATEWAY_NAME": "istio-ingressgateway"}), ns, "istio-ingressgateway")
		if err != nil {
			return err
		}
		if p.Type != model.Router || len(p.GatewayPortMap) != 2 || p.GatewayPortMap[80] != 8080 || p.GatewayPortMap[443] != 8443 {
			return fmt.Errorf("router %s, port map %v", p.Type, p.GatewayPortMap)
		}
		return nil
	})
}
