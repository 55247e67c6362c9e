package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/mizzen-mesh/mizzen/test/mesh"
)

// httpbin starts an httpbin-like workload (answers 200 with its path)
// behind the httpbin Service on port 8000, and a sleep workload whose
// sidecar the test uses as a mesh client. It returns the URL prefix of
// sleep's outbound listener for httpbin and httpbin's host name.
func httpbin(t *testing.T, ns string) (sleep, bin *mesh.Workload, outbound, host string) {
	t.Helper()
	service(t, ns, "httpbin", 8000)
	bin = workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "httpbin", Labels: map[string]string{"app": "httpbin", "version": "v1"},
		Ports: []int32{8000}, App: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		})})
	sleep = workload(t, mesh.WorkloadOptions{Namespace: ns, Name: "sleep", Labels: map[string]string{"app": "sleep"}})
	return sleep, bin, "http://" + sleep.OutboundIP + ":8000", "httpbin." + ns + ".svc.cluster.local"
}

// TestStrictMTLS: with a STRICT PeerAuthentication, a plaintext client is
// refused at httpbin's proxy while a mesh client gets through.
func TestStrictMTLS(t *testing.T) {
	ns := namespace(t, "strict")
	_, bin, outbound, host := httpbin(t, ns)
	direct := "http://" + bin.PodIP + ":8000/get"
	// PERMISSIVE (the default) admits both.
	eventually(t, "mesh client through sleep's sidecar", func() error { return expect(outbound+"/get", host, 200) })
	eventually(t, "plaintext client while PERMISSIVE", func() error { return expect(direct, host, 200) })

	apply(t, ns, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls:
    mode: STRICT
`)
	eventually(t, "plaintext refused under STRICT", func() error {
		code, _, err := get(client, direct, host, nil)
		if err == nil {
			return fmt.Errorf("plaintext request answered %d", code)
		}
		return nil
	})
	for range 20 {
		if err := expect(outbound+"/get", host, 200); err != nil {
			t.Fatalf("mesh client under STRICT: %v", err)
		}
	}
}

// TestAuthorizationPolicy: an ALLOW policy admits only GET /get from
// sleep's identity; everything else is denied with 403.
func TestAuthorizationPolicy(t *testing.T) {
	ns := namespace(t, "authz")
	_, bin, outbound, host := httpbin(t, ns)
	eventually(t, "mesh client", func() error { return expect(outbound+"/get", host, 200) })
	apply(t, ns, fmt.Sprintf(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/%s/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/get"]
`, ns))
	eventually(t, "POST denied", func() error { return expectMethod(http.MethodPost, outbound+"/get", host, 403) })
	eventually(t, "other path denied", func() error { return expect(outbound+"/headers", host, 403) })
	if err := expect(outbound+"/get", host, 200); err != nil {
		t.Fatalf("allowed request: %v", err)
	}
	// A plaintext caller has no principal: denied.
	if err := expect("http://"+bin.PodIP+":8000/get", host, 403); err != nil {
		t.Fatalf("caller without identity: %v", err)
	}
	// A DENY policy wins over the ALLOW.
	apply(t, ns, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-get
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/get"]
`)
	eventually(t, "DENY wins", func() error { return expect(outbound+"/get", host, 403) })
}

func expect(url, host string, want int) error {
	return expectMethod(http.MethodGet, url, host, want)
}

func expectMethod(method, url, host string, want int) error {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d", method, url, resp.StatusCode, want)
	}
	return nil
}
