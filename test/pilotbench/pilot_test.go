//go:build bench

package pilotbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/mizzen-mesh/mizzen/internal/ca"
	"github.com/mizzen-mesh/mizzen/test/cluster"
)

const (
	meshNS  = "istio-system"
	benchNS = "bench"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestPilotScale: a real API server with PILOT_BENCH_SERVICES (1000)
// Services and their EndpointSlices, pilot as its own process, xdsload
// with PILOT_BENCH_PROXIES (2000) streams; one VirtualService change;
// reports convergence percentiles and pilot's RSS and CPU.
//
//	go test -tags bench -run TestPilotScale -v -timeout 60m ./test/pilotbench/
func TestPilotScale(t *testing.T) {
	services := envInt("PILOT_BENCH_SERVICES", 1000)
	proxies := envInt("PILOT_BENCH_PROXIES", 2000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 1, CRDDirectoryPaths: []string{filepath.Join("..", "..", "charts", "base", "crds")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	cfg := *c.Config
	cfg.QPS, cfg.Burst = 500, 1000
	cs := kubernetes.NewForConfigOrDie(&cfg)
	ic := istioclient.NewForConfigOrDie(&cfg)

	// envtest's service range is a /24: add room for the services.
	if _, err := cs.NetworkingV1().ServiceCIDRs().Create(ctx, &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{meshNS, benchNS} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var identities []string
	for i := 0; i < 4; i++ {
		sa := fmt.Sprintf("sa-%d", i)
		if _, err := cs.CoreV1().ServiceAccounts(benchNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		identities = append(identities, benchNS+"/"+sa)
	}
	start := time.Now()
	createServices(t, ctx, cs, services)
	t.Logf("created %d services with endpoint slices in %s", services, time.Since(start).Round(time.Millisecond))
	if _, err := ic.NetworkingV1().VirtualServices(benchNS).Create(ctx, &clientnetworking.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "vs-0"},
		Spec: networking.VirtualService{Hosts: []string{"svc-0"}, Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
			{Destination: &networking.Destination{Host: "svc-0"}, Weight: 90},
			{Destination: &networking.Destination{Host: "svc-1"}, Weight: 10}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	pilotBin, loadBin := filepath.Join(dir, "pilot"), filepath.Join(dir, "xdsload")
	for bin, pkg := range map[string]string{pilotBin: "./cmd/pilot", loadBin: "./test/xdsload"} {
		cmd := exec.Command("go", "build", "-tags", cluster.BuildTags, "-o", bin, pkg)
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	addrFile := filepath.Join(dir, "addresses.json")
	pilotLog, err := os.Create(filepath.Join(dir, "pilot.log"))
	if err != nil {
		t.Fatal(err)
	}
	pilot := exec.Command(pilotBin, "discovery", "--kubeconfig="+c.Kubeconfig, "--meshConfig="+filepath.Join(dir, "none"),
		"--cacerts="+filepath.Join(dir, "none"), "--tls-extra-sans=127.0.0.1", "--log-level=warn",
		"--grpcAddr=127.0.0.1:0", "--httpAddr=127.0.0.1:0", "--monitoringAddr=127.0.0.1:0", "--webhookAddr=127.0.0.1:0",
		"--addresses-file="+addrFile)
	pilot.Env = append(os.Environ(), "POD_NAMESPACE="+meshNS)
	pilot.Stdout, pilot.Stderr = pilotLog, pilotLog
	if err := pilot.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pilot.Process.Kill(); _ = pilot.Wait() }()
	var addrs struct{ GRPC, Monitoring string }
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(addrFile)
		if err == nil && json.Unmarshal(b, &addrs) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pilot not ready after 2 minutes; log in %s", pilotLog.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	sec, err := cs.CoreV1().Secrets(meshNS).Get(ctx, ca.SelfSignedSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(rootFile, sec.Data[ca.CACertKey], 0o600); err != nil {
		t.Fatal(err)
	}
	cpu0 := cpuSeconds(t, pilot.Process.Pid)
	// PILOT_BENCH_PROFILE=<dir> saves pilot's CPU profile of
	// PILOT_BENCH_CPU_SECONDS (60) from PILOT_BENCH_CPU_DELAY seconds (0)
	// into the run, and its heap profile at the end.
	profDir := os.Getenv("PILOT_BENCH_PROFILE")
	var profWG sync.WaitGroup
	if profDir != "" {
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			if d, err := strconv.Atoi(os.Getenv("PILOT_BENCH_CPU_DELAY")); err == nil {
				time.Sleep(time.Duration(d) * time.Second)
			}
			fetch(t, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addrs.Monitoring, envInt("PILOT_BENCH_CPU_SECONDS", 60)), filepath.Join(profDir, "cpu.pprof"))
		}()
	}

	load := exec.Command(loadBin, "--kubeconfig="+c.Kubeconfig, "--addr="+addrs.GRPC, "--root="+rootFile,
		"--identities="+strings.Join(identities, ","), fmt.Sprintf("--proxies=%d", proxies), "--trigger="+benchNS+"/vs-0")
	load.Stderr = os.Stderr
	if profDir != "" {
		load.Env = append(os.Environ(), "XDSLOAD_CPUPROFILE="+filepath.Join(profDir, "xdsload-cpu.pprof"))
	}
	stdout, err := load.Output()
	if err != nil {
		t.Fatalf("xdsload: %v; pilot log in %s", err, pilotLog.Name())
	}
	cpu1 := cpuSeconds(t, pilot.Process.Pid)
	var res struct {
		Proxies, Converged      int
		ConnectSeconds          float64
		Min, P50, P90, P99, Max float64
		LoadCPUSeconds          float64
		Errors                  []string
	}
	if err := json.Unmarshal(stdout, &res); err != nil {
		t.Fatalf("xdsload output %q: %v", stdout, err)
	}
	rss, hwm := memKB(t, pilot.Process.Pid)
	if profDir != "" {
		fetch(t, "http://"+addrs.Monitoring+"/debug/pprof/heap", filepath.Join(profDir, "heap.pprof"))
		fetch(t, "http://"+addrs.Monitoring+"/debug/pprof/heap?debug=1", filepath.Join(profDir, "heap.txt"))
		profWG.Wait()
	}
	report := fmt.Sprintf("pilot scale: %d services, %d proxies (%d converged): connect+initial config %.1fs; "+
		"VirtualService change -> ACK min %.3fs p50 %.3fs p90 %.3fs p99 %.3fs max %.3fs; pilot RSS %d MiB (peak %d MiB), CPU %.1fs during the run; "+
		"xdsload CPU %.1fs from the change until converged",
		services, res.Proxies, res.Converged, res.ConnectSeconds, res.Min, res.P50, res.P90, res.P99, res.Max, rss/1024, hwm/1024, cpu1-cpu0, res.LoadCPUSeconds)
	t.Log(report)
	fmt.Println(report)
	if len(res.Errors) > 0 || res.Converged != proxies {
		t.Errorf("not every proxy converged: %v", res.Errors)
	}
}

// createServices creates n selector-less Services svc-<i> (port 80 → 8080)
// with one EndpointSlice of two ready addresses each.
func createServices(t *testing.T, ctx context.Context, cs kubernetes.Interface, n int) {
	t.Helper()
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("svc-%d", i)
				if _, err := cs.CoreV1().Services(benchNS).Create(ctx, &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: name},
					Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
				}, metav1.CreateOptions{}); err != nil {
					errs <- err
					continue
				}
				var eps []discoveryv1.Endpoint
				for j := 1; j <= 2; j++ {
					eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 200+j, i/256, i%256)},
						Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
				}
				if _, err := cs.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, &discoveryv1.EndpointSlice{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name,
						discoveryv1.LabelManagedBy: "mizzen-bench"}},
					AddressType: discoveryv1.AddressTypeIPv4,
					Endpoints:   eps,
					Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
				}, metav1.CreateOptions{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// fetch saves the body of url to file (profiles); failures are logged.
func fetch(t *testing.T, url, file string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Logf("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		t.Logf("profile %s: %v", url, err)
	}
}

// cpuSeconds is the process's user+system CPU time from /proc/<pid>/stat.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which is in parentheses): utime is the
	// 14th field of the line, stime the 15th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// memKB returns VmRSS and VmHWM (peak RSS) in KiB.
func memKB(t *testing.T, pid int) (rss, hwm int) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}
