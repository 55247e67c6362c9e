package pilot

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/internal/golden"
	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

// TestXDSRefusesUnauthenticated: a stream without a client certificate is
// refused, and so is a node that claims another namespace or service
// account than its certificate.
func TestXDSRefusesUnauthenticated(t *testing.T) {
	ns := createNamespace(t, "refuse-")
	c, err := dialXDS(t, addrs.GRPC, caTLS(), xdsclient.Options{Node: node("sidecar", "10.20.0.9", "p", ns, "app", nil, nil)})
	if err == nil {
		err = c.Wait()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a client certificate: %v, want Unauthenticated", err)
	}
	cfg := workloadTLS(t, addrs.GRPC, ns, "app")
	for name, n := range map[string]struct{ ns, sa string }{
		"namespace of another":       {"kube-system", "app"},
		"service account of another": {ns, "admin"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := dialXDS(t, addrs.GRPC, cfg, xdsclient.Options{Node: node("sidecar", "10.20.0.9", "p", n.ns, n.sa, nil, nil)})
			if err == nil {
				err = c.Wait()
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("got %v, want PermissionDenied", err)
			}
		})
	}
}

const tutorialNS = "tutorial"

// setupTutorial creates Istio's request-routing tutorial: service myapp
// with pods v1 and v2 (EndpointSlices written directly, fixed addresses),
// a Gateway for the ingress gateway, subsets v1 and v2, and a
// VirtualService routing /myapp (rewritten to /) 90/10 to them, for the
// gateway and the mesh.
func setupTutorial(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	createNamespace(t, tutorialNS)
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// The ingress gateway's Service, which gives the router its port map.
	_, err := cs.CoreV1().Services(meshNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.10", Selector: map[string]string{"istio": "ingressgateway"},
			Ports: []corev1.ServicePort{{Name: "http2", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().Services(tutorialNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "myapp"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.11",
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	for i, v := range []string{"v1", "v2"} {
		pod := "myapp-" + v
		_, err = cs.CoreV1().Pods(tutorialNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: pod, Labels: map[string]string{"app": "myapp", "version": v}},
			Spec:       corev1.PodSpec{NodeName: testCl.Nodes[0], Containers: []corev1.Container{{Name: "app", Image: "myapp"}}},
		}, metav1.CreateOptions{})
		mustCreate(err)
		_, err = cs.DiscoveryV1().EndpointSlices(tutorialNS).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: pod, Labels: map[string]string{discoveryv1.LabelServiceName: "myapp",
				discoveryv1.LabelManagedBy: "mizzen-test"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.30.0.%d", i+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: tutorialNS, Name: pod}}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		}, metav1.CreateOptions{})
		mustCreate(err)
	}
	_, err = ic.NetworkingV1().Gateways(tutorialNS).Create(ctx, &clientnetworking.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "myapp-gateway"},
		Spec: networking.Gateway{Selector: map[string]string{"istio": "ingressgateway"},
			Servers: []*networking.Server{{Port: &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"}, Hosts: []string{"*"}}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = ic.NetworkingV1().DestinationRules(tutorialNS).Create(ctx, &clientnetworking.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: "myapp"},
		Spec: networking.DestinationRule{Host: "myapp", Subsets: []*networking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = ic.NetworkingV1().VirtualServices(tutorialNS).Create(ctx, &clientnetworking.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "myapp"},
		Spec:       tutorialVS(90, 10),
	}, metav1.CreateOptions{})
	mustCreate(err)
	// Sidecars of the tutorial namespace see only it (other tests'
	// namespaces must not leak into the golden files).
	_, err = ic.NetworkingV1().Sidecars(tutorialNS).Create(ctx, &clientnetworking.Sidecar{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec:       networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*"}}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
}

func tutorialVS(w1, w2 int32) networking.VirtualService {
	return networking.VirtualService{
		Hosts:    []string{"myapp"},
		Gateways: []string{"myapp-gateway", "mesh"},
		Http: []*networking.HTTPRoute{{
			Match:   []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/myapp"}}}},
			Rewrite: &networking.HTTPRewrite{Uri: "/"},
			Route: []*networking.HTTPRouteDestination{
				{Destination: &networking.Destination{Host: "myapp", Subset: "v1"}, Weight: w1},
				{Destination: &networking.Destination{Host: "myapp", Subset: "v2"}, Weight: w2},
			},
		}},
	}
}

func routerNode() *corev3.Node {
	return node("router", "10.20.0.2", "istio-ingressgateway-1", meshNamespace, "istio-ingressgateway",
		map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}, map[string]string{"GATEWAY_NAME": "istio-ingressgateway"})
}

func sidecarNode() *corev3.Node {
	return node("sidecar", "10.20.0.5", "sleep-1", tutorialNS, "sleep", map[string]string{"app": "sleep"}, nil)
}

// weights returns the weighted clusters of the route matching /myapp, as
// "cluster=weight" in order.
func weights(rcs map[string]proto.Message) []string {
	var out []string
	for _, m := range rcs {
		rc := m.(*routev3.RouteConfiguration)
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetMatch().GetPrefix() != "/myapp" {
					continue
				}
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					out = append(out, fmt.Sprintf("%s=%d", wc.GetName(), wc.GetWeight().GetValue()))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestTutorial: the tutorial arrives at an ingress gateway and at a
// sidecar as exactly the resources in testdata (run with -update to
// rewrite them), and a change of the VirtualService reaches connected
// clients over SotW and delta.
func TestTutorial(t *testing.T) {
	setupTutorial(t)
	want90 := []string{"outbound|80|v1|myapp.tutorial.svc.cluster.local=90", "outbound|80|v2|myapp.tutorial.svc.cluster.local=10"}
	type proxyCase struct {
		name   string
		node   *corev3.Node
		ns, sa string
	}
	cases := []proxyCase{
		{"router", routerNode(), meshNamespace, "istio-ingressgateway"},
		{"sidecar", sidecarNode(), tutorialNS, "sleep"},
	}
	clients := map[string]*client{}
	for _, pc := range cases {
		for _, delta := range []bool{false, true} {
			cfg := workloadTLS(t, addrs.GRPC, pc.ns, pc.sa)
			c := mustDial(t, cfg, xdsclient.Options{Node: pc.node, Delta: delta})
			eventually(t, pc.name+" routes of the tutorial", func() error {
				if got := weights(c.Resources(xdsclient.RouteType)); strings.Join(got, " ") != strings.Join(want90, " ") {
					return fmt.Errorf("weights %v, want %v", got, want90)
				}
				cla, ok := c.Resources(xdsclient.EndpointType)["outbound|80|v1|myapp.tutorial.svc.cluster.local"]
				if !ok || !strings.Contains(prototext.Format(cla), "10.30.0.1") {
					return fmt.Errorf("no v1 endpoints yet")
				}
				return nil
			})
			clients[fmt.Sprintf("%s/%v", pc.name, delta)] = c
		}
		golden.AssertYAML(t, filepath.Join("testdata", "tutorial-"+pc.name+".yaml"),
			dumpYAML(t, clients[pc.name+"/false"].Client, keepTutorial))
		golden.AssertYAML(t, filepath.Join("testdata", "tutorial-"+pc.name+".yaml"),
			dumpYAML(t, clients[pc.name+"/true"].Client, keepTutorial))
	}

	// Shift to 50/50: every connected client follows.
	vs, err := ic.NetworkingV1().VirtualServices(tutorialNS).Get(context.Background(), "myapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vs.Spec = tutorialVS(50, 50)
	if _, err := ic.NetworkingV1().VirtualServices(tutorialNS).Update(context.Background(), vs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want50 := []string{"outbound|80|v1|myapp.tutorial.svc.cluster.local=50", "outbound|80|v2|myapp.tutorial.svc.cluster.local=50"}
	for name, c := range clients {
		c.waitUpdate(t, xdsclient.RouteType, func(u xdsclient.Update) bool {
			return strings.Join(weights(u.Resources), " ") == strings.Join(want50, " ")
		})
		t.Logf("%s got the 50/50 split", name)
	}
}

// keepTutorial keeps the resources that belong to the tutorial (the router
// also sees other tests' services).
func keepTutorial(typeURL, name string) bool {
	switch typeURL {
	case xdsclient.ClusterType, xdsclient.EndpointType:
		return strings.Contains(name, "tutorial") || !strings.Contains(name, "|")
	}
	return true
}

// dumpYAML renders a client's accepted resources, type by type and name
// by name, in protojson turned YAML.
func dumpYAML(t *testing.T, c *xdsclient.Client, keep func(typeURL, name string) bool) []byte {
	t.Helper()
	var out strings.Builder
	for _, typeURL := range []string{xdsclient.ClusterType, xdsclient.EndpointType, xdsclient.ListenerType, xdsclient.RouteType} {
		res := c.Resources(typeURL)
		names := make([]string, 0, len(res))
		for n := range res {
			if keep(typeURL, n) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			js, err := protojson.Marshal(res[n])
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(js, &v); err != nil {
				t.Fatal(err)
			}
			y, err := yaml.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			out.WriteString("---\n# " + typeURL[strings.LastIndex(typeURL, ".")+1:] + "\n")
			out.Write(y)
		}
	}
	return []byte(out.String())
}
