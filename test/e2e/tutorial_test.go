package e2e

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/mizzen-mesh/mizzen/test/mesh"
)

// reviews starts reviews v1 and v2 behind the reviews Service in ns.
func reviews(t *testing.T, ns string) (v1, v2 *versionApp) {
	t.Helper()
	service(t, ns, "reviews", 9080)
	v1, v2 = newVersionApp("v1"), newVersionApp("v2")
	w1 := workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "reviews-v1", ServiceAccount: "bookinfo-reviews",
		Labels: map[string]string{"app": "reviews", "version": "v1"}, Ports: []int32{9080}, App: v1})
	workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "reviews-v2", ServiceAccount: "bookinfo-reviews",
		Labels: map[string]string{"app": "reviews", "version": "v2"}, Ports: []int32{9080}, App: v2})
	dumpOnFailure(t, w1)
	return v1, v2
}

// gatewayAndSubsets is the tutorial's Gateway (bookinfo-gateway, selecting
// istio: ingressgateway, port 8080, host %[1]q) and the reviews
// DestinationRule with subsets v1 and v2, followed by "---".
const gatewayAndSubsets = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - %[1]q
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
`

// TestTutorialSplit applies Istio's traffic-shifting tutorial as written
// (a Gateway selecting istio: ingressgateway, a DestinationRule with v1/v2
// subsets, a VirtualService matching the prefix /myapp, rewriting it to /
// and splitting 90/10) and sends 1000 requests through the ingress gateway.
func TestTutorialSplit(t *testing.T) {
	ns := namespace(t, "tutorial")
	v1, v2 := reviews(t, ns)
	host := ns + ".example.com"
	apply(t, ns, fmt.Sprintf(gatewayAndSubsets+`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - %[1]q
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        prefix: /myapp
    rewrite:
      uri: /
    route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: 10
`, host))

	url := "http://" + ingress.PodIP + ":8080/myapp"
	// Both subsets must be reachable before counting.
	eventually(t, "both versions behind the gateway", func() error {
		seen := map[string]bool{}
		for range 60 {
			code, body, err := get(client, url, host, nil)
			if err != nil {
				return err
			}
			if code != 200 {
				return fmt.Errorf("status %d: %s", code, body)
			}
			seen[body] = true
		}
		if !seen["v1"] || !seen["v2"] {
			return fmt.Errorf("saw %v", seen)
		}
		return nil
	})
	before1, before2 := v1.seen()["/"], v2.seen()["/"]

	const n = 1000
	counts := map[string]int{}
	for i := range n {
		code, body, err := get(client, url, host, nil)
		if err != nil || code != 200 {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
		counts[body]++
	}
	// Binomial(1000, 0.9): sd 9.5; 5 sd either side.
	want, sd := 0.9*n, math.Sqrt(n*0.9*0.1)
	if got := float64(counts["v1"]); math.Abs(got-want) > 5*sd || counts["v1"]+counts["v2"] != n {
		t.Fatalf("split %v, want about 900/100", counts)
	}
	t.Logf("split over %d requests: %v", n, counts)
	// The backends saw the rewritten path only.
	if got := v1.seen()["/"] - before1 + v2.seen()["/"] - before2; got != n {
		t.Errorf("backends saw %d requests for /, want %d (all paths: v1 %v, v2 %v)", got, n, v1.seen(), v2.seen())
	}
	for _, a := range []*versionApp{v1, v2} {
		for p := range a.seen() {
			if strings.HasPrefix(p, "/myapp") {
				t.Errorf("%s saw the unrewritten path %s", a.version, p)
			}
		}
	}
}
