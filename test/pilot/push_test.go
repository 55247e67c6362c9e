package pilot

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/prototext"
	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

// webService creates Service web (port 80 → 8080, selector app=web) in ns.
func webService(t *testing.T, ns string) string {
	t.Helper()
	_, err := cs.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return "outbound|80||web." + ns + ".svc.cluster.local"
}

// healthyEndpoints counts the HEALTHY endpoints of a load assignment.
func healthyEndpoints(c *client, cluster string) int {
	cla, ok := c.Resources(xdsclient.EndpointType)[cluster].(*endpointv3.ClusterLoadAssignment)
	if !ok {
		return -1
	}
	n := 0
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if e.GetHealthStatus() != 2 && e.GetHealthStatus() != 3 { // UNHEALTHY, DRAINING
				n++
			}
		}
	}
	return n
}

// TestEndpointsFollowPods: scaling a Deployment of kwok pods up and down
// changes the endpoints a connected proxy holds, with endpoint-only
// pushes (no new clusters or listeners).
func TestEndpointsFollowPods(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "eps-")
	cluster := webService(t, ns)
	labels := map[string]string{"app": "web"}
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web",
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, workloadTLS(t, addrs.GRPC, ns, "client"), xdsclient.Options{Node: node("sidecar", "10.20.0.7", "client-1", ns, "client", nil, nil)})
	for _, replicas := range []int{1, 3, 1} {
		// The deployment controller updates the object too: retry on conflict.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			scale, err := cs.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			scale.Spec.Replicas = int32(replicas)
			_, err = cs.AppsV1().Deployments(ns).UpdateScale(ctx, "web", scale, metav1.UpdateOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, fmt.Sprintf("%d endpoints", replicas), func() error {
			if n := healthyEndpoints(c, cluster); n != replicas {
				return fmt.Errorf("%d healthy endpoints, want %d", n, replicas)
			}
			return nil
		})
	}
}

// metricValue reads one sample from pilot's /metrics.
func metricValue(t *testing.T, monitoring, series string) float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+monitoring+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestNACK: a proxy rejecting a route configuration keeps its last good
// one, pilot counts the reject and does not send the same version again,
// and a later change reaches the proxy.
func TestNACK(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "nack-")
	webService(t, ns)
	reject := func(u xdsclient.Update) string {
		if u.TypeURL != xdsclient.RouteType {
			return ""
		}
		for _, m := range u.Resources {
			if strings.Contains(prototext.Format(m), "x-unsupported") {
				return "header match x-unsupported is not implemented"
			}
		}
		return ""
	}
	c, err := dialXDS(t, addrs.GRPC, workloadTLS(t, addrs.GRPC, ns, "client"), xdsclient.Options{
		Node: node("sidecar", "10.20.0.8", "client-1", ns, "client", nil, nil), Reject: reject})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "routes", func() error {
		if c.Acked(xdsclient.RouteType) == "" {
			return fmt.Errorf("no routes accepted yet")
		}
		return nil
	})
	rejectsBefore := metricValue(t, addrs.Monitoring, `pilot_xds_rejects{type="rds"}`)
	vs := func(header string) networking.VirtualService {
		return networking.VirtualService{Hosts: []string{"web"}, Http: []*networking.HTTPRoute{{
			Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
				header: {MatchType: &networking.StringMatch_Exact{Exact: "yes"}}}}},
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "web"}}}}}}
	}
	obj, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, &clientnetworking.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: vs("x-unsupported")}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := c.Acked(xdsclient.RouteType)
	rejected := c.waitUpdate(t, xdsclient.RouteType, func(u xdsclient.Update) bool { return u.Rejected != "" })
	// The NACK must not be answered with the same configuration again.
	select {
	case u := <-c.updates:
		if u.TypeURL == xdsclient.RouteType {
			t.Fatalf("after the NACK pilot sent routes version %s again (first rejected %s)", u.Version, rejected.Version)
		}
	case <-time.After(time.Second):
	}
	if got := c.Acked(xdsclient.RouteType); got != good {
		t.Errorf("client holds routes %s, want its last good %s", got, good)
	}
	eventually(t, "reject counted", func() error {
		if v := metricValue(t, addrs.Monitoring, `pilot_xds_rejects{type="rds"}`); v != rejectsBefore+1 {
			return fmt.Errorf("pilot_xds_rejects{type=\"rds\"} = %v, want %v", v, rejectsBefore+1)
		}
		return nil
	})

	obj.Spec = vs("x-supported")
	if _, err := ic.NetworkingV1().VirtualServices(ns).Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u := c.waitUpdate(t, xdsclient.RouteType, func(u xdsclient.Update) bool {
		for _, m := range u.Resources {
			if rc, ok := m.(*routev3.RouteConfiguration); ok && strings.Contains(prototext.Format(rc), "x-supported") {
				return true
			}
		}
		return false
	})
	if u.Rejected != "" || c.Acked(xdsclient.RouteType) != u.Version {
		t.Errorf("the fixed routes were not accepted: %q", u.Rejected)
	}
}

// TestReadyMetricsDebug: /ready, the metrics users expect, and
// config_dump showing exactly what a connected proxy was sent.
func TestReadyMetricsDebug(t *testing.T) {
	if code, _ := httpGet(t, "http://"+addrs.HTTP+"/ready"); code != 200 {
		t.Errorf("/ready: %d", code)
	}
	ns := createNamespace(t, "debug-")
	webService(t, ns)
	n := node("sidecar", "10.20.0.9", "client-1", ns, "client", nil, nil)
	c := mustDial(t, workloadTLS(t, addrs.GRPC, ns, "client"), xdsclient.Options{Node: n})
	eventually(t, "routes", func() error {
		if c.Acked(xdsclient.RouteType) == "" || c.Acked(xdsclient.EndpointType) == "" {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	_, body := httpGet(t, "http://"+addrs.Monitoring+"/metrics")
	for _, name := range []string{"pilot_xds_pushes", "pilot_xds_push_time", "pilot_xds ", "pilot_proxy_convergence_time",
		"pilot_xds_rejects", "pilot_total_xds_internal_errors", "mizzen_ca_csr_total", "process_resident_memory_bytes"} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v := metricValue(t, addrs.Monitoring, `mizzen_ca_csr_total{result="success"}`); v < 1 {
		t.Errorf("CSR successes %v", v)
	}
	code, dump := httpGet(t, "http://"+addrs.Monitoring+"/debug/config_dump?proxyID="+n.GetId())
	if code != 200 {
		t.Fatalf("config_dump: %d %s", code, dump)
	}
	for _, want := range []string{`"outbound|80||web.` + ns + `.svc.cluster.local"`, `"virtualOutbound"`, `"version": "` + c.Acked(xdsclient.RouteType) + `"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("config_dump lacks %s", want)
		}
	}
	code, conns := httpGet(t, "http://"+addrs.Monitoring+"/debug/connections")
	if code != 200 || !strings.Contains(conns, n.GetId()) || !strings.Contains(conns, "spiffe://cluster.local/ns/"+ns+"/sa/client") {
		t.Errorf("connections: %d %s", code, conns)
	}
}
