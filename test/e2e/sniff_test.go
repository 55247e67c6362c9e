package e2e

import (
	"fmt"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mizzen-mesh/mizzen/test/mesh"
)

// TestSniffedInboundPort: a Service port with no name and no appProtocol
// is sniffed on both sides, as in Istio. HTTP from a mesh client (mTLS)
// and from a plaintext client reaches the server's HTTP chain: an
// AuthorizationPolicy on paths applies (it would deny everything on a TCP
// chain) and the server's sidecar reports HTTP metrics.
func TestSniffedInboundPort(t *testing.T) {
	ns := namespace(t, "sniff")
	servicePort(t, ns, "web", corev1.ServicePort{Port: 8000, TargetPort: intstr.FromInt32(8000)})
	web := workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "web", Labels: map[string]string{"app": "web"},
		Ports: []int32{8000}, App: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		})})
	sleep := workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "sleep", Labels: map[string]string{"app": "sleep"}})
	outbound, host := "http://"+sleep.OutboundIP+":8000", "web."+ns+".svc.cluster.local"
	direct := "http://" + web.PodIP + ":8000"
	eventually(t, "mesh client", func() error { return expect(outbound+"/get", host, 200) })

	apply(t, ns, fmt.Sprintf(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/%s/sa/sleep"]
    to:
    - operation:
        paths: ["/get"]
  - to:
    - operation:
        paths: ["/public"]
`, ns))
	eventually(t, "other path denied", func() error { return expect(outbound+"/headers", host, 403) })
	for _, c := range []struct {
		url  string
		code int
	}{
		{outbound + "/get", 200},     // mTLS, HTTP chain, principal and path allowed
		{direct + "/public", 200},    // plaintext, sniffed as HTTP, path allowed
		{direct + "/get", 403},       // plaintext has no principal
		{outbound + "/headers", 403}, // path not allowed
	} {
		if err := expect(c.url, host, c.code); err != nil {
			t.Errorf("%s: %v", c.url, err)
		}
	}

	eventually(t, "destination HTTP metrics", func() error {
		fams, err := scrape(web.StatsURL())
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, s := range fams["istio_requests_total"] {
			if matches(s.Metric, map[string]string{"reporter": "destination", "request_protocol": "http", "destination_workload": "web"}) {
				seen[string(s.Metric["connection_security_policy"])+" "+string(s.Metric["response_code"])] = true
			}
		}
		for _, want := range []string{"mutual_tls 200", "mutual_tls 403", "none 200", "none 403"} {
			if !seen[want] {
				return fmt.Errorf("no destination series for %s (have %v)", want, seen)
			}
		}
		return nil
	})
}
