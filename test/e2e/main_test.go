// Package e2e runs the mesh end to end on one machine: the control plane
// binary against a real API server, an ingress gateway and sidecar proxies
// as processes, real test applications, real traffic over loopback (see
// test/mesh for how pods get loopback addresses).
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/mizzen-mesh/mizzen/test/cluster"
	"github.com/mizzen-mesh/mizzen/test/mesh"
)

var (
	m       *mesh.Mesh
	dyn     dynamic.Interface
	ingress *mesh.Workload
)

func TestMain(tm *testing.M) {
	if os.Geteuid() != 0 {
		// Pods get addresses of a range test/mesh makes local with
		// `ip route add local`, which needs root (as CI and the
		// development machines have).
		fmt.Println("end-to-end tests need root to make 198.18.10.0/24 local on lo; skipped")
		os.Exit(0)
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(cluster.RunTests(tm, "end-to-end tests", cluster.Options{
		Nodes:             1,
		CRDDirectoryPaths: []string{root + "/charts/base/crds"},
	}, setup))
}

func setup(ctx context.Context, c *cluster.Cluster) (func() error, error) {
	dir, err := os.MkdirTemp("", "mizzen-e2e-")
	if err != nil {
		return nil, err
	}
	var log io.Writer = io.Discard
	if os.Getenv("MIZZEN_E2E_LOG") == "1" {
		log = os.Stderr
	}
	if m, err = mesh.Start(ctx, c, dir, log); err != nil {
		return nil, err
	}
	if dyn, err = dynamic.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	// The ingress gateway every test's Gateway selects, as Istio's
	// istio-ingressgateway Deployment would run it.
	ingress, err = m.AddWorkload(ctx, mesh.WorkloadOptions{
		Namespace: mesh.Namespace, Name: "istio-ingressgateway", ServiceAccount: "istio-ingressgateway-service-account",
		Labels: map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"},
		Router: true,
	})
	if err != nil {
		return nil, err
	}
	return func() error {
		m.Stop()
		return os.RemoveAll(dir)
	}, nil
}

// namespace creates a fresh namespace for one test.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	ns, err := m.CS.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: map[string]string{"istio-injection": "enabled"}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// service creates a Service selecting app=<name> with one HTTP port.
func service(t *testing.T, ns, name string, port int32) {
	t.Helper()
	servicePort(t, ns, name, corev1.ServicePort{Name: "http", Port: port, TargetPort: intstr.FromInt32(port)})
}

// servicePort creates Service name selecting app=name with one port.
func servicePort(t *testing.T, ns, name string, port corev1.ServicePort) {
	t.Helper()
	_, err := m.CS.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{port},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// workload starts a pod with a sidecar serving app on port.
func workload(t *testing.T, o mesh.WorkloadOptions) *mesh.Workload {
	t.Helper()
	w, err := m.AddWorkload(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

var istioResources = map[string]string{
	"VirtualService":        "virtualservices",
	"DestinationRule":       "destinationrules",
	"Gateway":               "gateways",
	"ServiceEntry":          "serviceentries",
	"Sidecar":               "sidecars",
	"PeerAuthentication":    "peerauthentications",
	"AuthorizationPolicy":   "authorizationpolicies",
	"RequestAuthentication": "requestauthentications",
	"Telemetry":             "telemetries",
}

// apply server-side-applies Istio YAML documents (as a user would with
// kubectl apply --server-side) into ns.
func apply(t *testing.T, ns, docs string) {
	t.Helper()
	for _, doc := range strings.Split(docs, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("bad test YAML: %v\n%s", err, doc)
		}
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		if err != nil {
			t.Fatal(err)
		}
		res, ok := istioResources[u.GetKind()]
		if !ok {
			t.Fatalf("unknown kind %s", u.GetKind())
		}
		b, _ := u.MarshalJSON()
		_, err = dyn.Resource(gv.WithResource(res)).Namespace(ns).Patch(context.Background(), u.GetName(), "application/apply-patch+yaml", b,
			metav1.PatchOptions{FieldManager: "e2e", Force: ptrTrue()})
		if err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

func ptrTrue() *bool { b := true; return &b }

// get sends one request and returns status and body.
func get(c *http.Client, url, host string, hdr map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventually retries f until it succeeds or 60s pass.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// versionApp answers with its version and records the paths it saw.
type versionApp struct {
	version string
	mu      sync.Mutex
	paths   map[string]int
}

func newVersionApp(v string) *versionApp { return &versionApp{version: v, paths: map[string]int{}} }

func (a *versionApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.paths[r.URL.Path]++
	a.mu.Unlock()
	w.Header().Set("x-version", a.version)
	fmt.Fprint(w, a.version)
}

func (a *versionApp) seen() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for k, v := range a.paths {
		out[k] = v
	}
	return out
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// dumpOnFailure logs what the given proxies run (their admin config dump)
// and what the control plane sent them, when the test failed.
func dumpOnFailure(t *testing.T, ws ...*mesh.Workload) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, w := range append([]*mesh.Workload{ingress}, ws...) {
			resp, err := http.Get(w.AdminURL() + "/config_dump")
			if err != nil {
				t.Logf("config dump of %s: %v", w.Name, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(b) > 64<<10 {
				b = append(b[:64<<10], "..."...)
			}
			t.Logf("config dump of %s/%s:\n%s", w.Namespace, w.Name, b)
		}
	})
}
