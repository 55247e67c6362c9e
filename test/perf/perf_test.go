// Package perf measures the data plane: a client -> sidecar -> (mTLS) ->
// sidecar -> echo chain built with Mizzen's proxies (through the real
// control plane and API server, see test/mesh), compared in the same run
// with the same two-hop chain built with nginx and with haproxy (TLS with
// client certificates between the hops) and with the direct path. fortio
// (Istio's load tool) drives every chain with the same load.
//
// It runs only when asked: `make bench-dataplane` (MIZZEN_PERF=1), after
// hack/setup-bench.sh installed fortio, nginx and haproxy. Settings:
// MIZZEN_PERF_QPS (default 1000), MIZZEN_PERF_CONNS (4),
// MIZZEN_PERF_DURATION (30s), MIZZEN_PERF_PAYLOAD (1024 bytes).
package perf

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mizzen-mesh/mizzen/test/cluster"
	"github.com/mizzen-mesh/mizzen/test/mesh"
)

var (
	m        *mesh.Mesh
	fortio   string
	settings = struct {
		qps, conns, payload, rounds int
		duration                    time.Duration
	}{1000, 4, 1024, 1, 30 * time.Second}
)

func TestMain(tm *testing.M) {
	if os.Getenv("MIZZEN_PERF") != "1" {
		fmt.Println("data-plane benchmark: set MIZZEN_PERF=1 (make bench-dataplane) to run it")
		os.Exit(0)
	}
	settings.qps = envInt("MIZZEN_PERF_QPS", settings.qps)
	settings.conns = envInt("MIZZEN_PERF_CONNS", settings.conns)
	settings.payload = envInt("MIZZEN_PERF_PAYLOAD", settings.payload)
	settings.rounds = envInt("MIZZEN_PERF_ROUNDS", settings.rounds)
	if d, err := time.ParseDuration(os.Getenv("MIZZEN_PERF_DURATION")); err == nil {
		settings.duration = d
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fortio = filepath.Join(os.Getenv("MIZZEN_BENCH_BIN"), "fortio")
	if _, err := os.Stat(fortio); err != nil {
		fmt.Fprintln(os.Stderr, "fortio not found: run hack/setup-bench.sh and set MIZZEN_BENCH_BIN to the directory it prints")
		os.Exit(1)
	}
	os.Exit(cluster.RunTests(tm, "data-plane benchmark", cluster.Options{
		Nodes: 1, CRDDirectoryPaths: []string{root + "/charts/base/crds"},
	}, func(ctx context.Context, c *cluster.Cluster) (func() error, error) {
		dir, err := os.MkdirTemp("", "mizzen-perf-")
		if err != nil {
			return nil, err
		}
		if m, err = mesh.Start(ctx, c, dir, io.Discard); err != nil {
			return nil, err
		}
		return func() error { m.Stop(); return os.RemoveAll(dir) }, nil
	}))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// result is one chain's measurement.
type result struct {
	name          string
	p50, p90, p99 float64 // milliseconds
	qps           float64
	errors        int
	cpu           []float64 // vCPU seconds per second, per proxy process
	rss           []float64 // MiB, per proxy process
}

// TestDataplanePerf runs the four paths one after the other on an
// otherwise idle machine and prints the comparison.
func TestDataplanePerf(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ns := "perf"
	if _, err := m.CS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CS.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// MIZZEN_PERF_PROXY_ENV (space-separated NAME=value) is added to the
	// sidecars' environment, to compare runtime settings (GOGC, ...).
	proxyEnv := strings.Fields(os.Getenv("MIZZEN_PERF_PROXY_ENV"))
	server, err := m.AddWorkload(ctx, mesh.WorkloadOptions{Namespace: ns, Name: "echo", Labels: map[string]string{"app": "echo"}, Ports: []int32{8080}, Env: proxyEnv})
	if err != nil {
		t.Fatal(err)
	}
	client, err := m.AddWorkload(ctx, mesh.WorkloadOptions{Namespace: ns, Name: "client", Labels: map[string]string{"app": "client"}, Env: proxyEnv})
	if err != nil {
		t.Fatal(err)
	}
	// The echo application: fortio's own server, on the echo pod's
	// application address (what its sidecar forwards to).
	echoAddr := net.JoinHostPort(server.AppIP, "8080")
	echo := start(t, fortio, "server", "-http-port", echoAddr, "-grpc-port", "disabled", "-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled")
	waitHTTP(t, "http://"+echoAddr+"/echo")
	_ = echo

	host := "echo." + ns + ".svc.cluster.local"
	meshURL := "http://" + net.JoinHostPort(client.OutboundIP, "8080") + "/echo"
	waitHTTPHost(t, meshURL, host)

	// The paths: direct, then the mesh, then each peer's chain, all set
	// up first so that every round measures all of them back to back.
	type path struct {
		name, url, host string
		pids            []int
	}
	paths := []path{
		{"direct", "http://" + echoAddr + "/echo", "", nil},
		{"mizzen (2 sidecars, mTLS)", meshURL, host, []int{client.Proxy.Pid(), server.Proxy.Pid()}},
	}
	if err := peerCerts(dir); err != nil {
		t.Fatal(err)
	}
	echoPort, _ := strconv.Atoi("8080")
	for _, peer := range []struct {
		name string
		tmpl func(chainPorts, string) ([]byte, error)
		cmd  func(conf string) []string
	}{
		{"nginx", func(p chainPorts, role string) ([]byte, error) { return peerConfig(nginxConf, p, role) },
			func(conf string) []string { return []string{"nginx", "-c", conf, "-e", "stderr"} }},
		{"haproxy", func(p chainPorts, role string) ([]byte, error) { return peerConfig(haproxyConf, p, role) },
			func(conf string) []string { return []string{"haproxy", "-f", conf, "-db"} }},
	} {
		if _, err := exec.LookPath(peer.name); err != nil {
			t.Logf("%s not installed (hack/setup-bench.sh): skipped", peer.name)
			continue
		}
		front, back := freePort(t), freePort(t)
		ports := chainPorts{Dir: dir, Front: front, Back: back, Echo: echoPort}
		// The peers' back hop talks to the same echo server.
		var pids []int
		for _, role := range []string{"back", "front"} {
			conf, err := peer.tmpl(ports, role)
			if err != nil {
				t.Fatal(err)
			}
			conf = []byte(strings.ReplaceAll(string(conf), "127.0.0.1:"+strconv.Itoa(echoPort), echoAddr))
			path := filepath.Join(dir, peer.name+"-"+role+".conf")
			if err := os.WriteFile(path, conf, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
				_ = os.MkdirAll(filepath.Join(dir, "nginx-"+role+"-"+d), 0o700)
			}
			args := peer.cmd(path)
			p := start(t, args[0], args[1:]...)
			pids = append(pids, p.Process.Pid)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/echo", front)
		waitHTTP(t, url)
		paths = append(paths, path{peer.name + " (2 hops, mTLS)", url, "", pids})
	}

	// MIZZEN_PERF_PROFILE=<dir> also records a CPU profile of each proxy
	// during the first round's mesh run.
	profiled := false
	var rounds [][]result
	for round := 1; round <= settings.rounds; round++ {
		var results []result
		for _, p := range paths {
			if pd := os.Getenv("MIZZEN_PERF_PROFILE"); pd != "" && p.pids != nil && !profiled && strings.HasPrefix(p.name, "mizzen") {
				profiled = true
				for _, w := range []*mesh.Workload{client, server} {
					go profile(t, w.AdminURL(), filepath.Join(pd, w.Name+".pprof"))
				}
			}
			results = append(results, run(t, dir, p.name, p.url, p.host, p.pids))
			if hf := os.Getenv("MIZZEN_PERF_HOLD"); hf != "" && strings.HasPrefix(p.name, "mizzen") && round == 1 {
				hold(hf, fmt.Sprintf("%d %d %s %s\n", client.Proxy.Pid(), server.Proxy.Pid(), meshURL, host))
			}
		}
		report(t, fmt.Sprintf("round %d of %d", round, settings.rounds), results)
		rounds = append(rounds, results)
	}
	if len(rounds) > 1 {
		report(t, fmt.Sprintf("median of %d rounds", len(rounds)), medians(rounds))
	}
}

// hold writes what a person needs to look at the running sidecars
// (MIZZEN_PERF_HOLD=<file>: their pids, the mesh URL and Host) and waits
// until the file is removed.
func hold(file, what string) {
	_ = os.WriteFile(file, []byte(what), 0o644)
	for {
		if _, err := os.Stat(file); err != nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// medians is, per path, the median of every figure over the rounds
// (errors are summed).
func medians(rounds [][]result) []result {
	var out []result
	for i, first := range rounds[0] {
		med := func(f func(result) float64) float64 {
			v := make([]float64, 0, len(rounds))
			for _, rs := range rounds {
				v = append(v, f(rs[i]))
			}
			sort.Float64s(v)
			if n := len(v); n%2 == 0 {
				return (v[n/2-1] + v[n/2]) / 2
			}
			return v[len(v)/2]
		}
		r := result{name: first.name}
		r.qps = med(func(r result) float64 { return r.qps })
		r.p50 = med(func(r result) float64 { return r.p50 })
		r.p90 = med(func(r result) float64 { return r.p90 })
		r.p99 = med(func(r result) float64 { return r.p99 })
		for _, rs := range rounds {
			r.errors += rs[i].errors
		}
		for j := range first.cpu {
			r.cpu = append(r.cpu, med(func(r result) float64 { return r.cpu[j] }))
			r.rss = append(r.rss, med(func(r result) float64 { return r.rss[j] }))
		}
		out = append(out, r)
	}
	return out
}

// run drives url with fortio and measures the given processes (and their
// children) meanwhile.
func run(t *testing.T, dir, name, url, host string, pids []int) result {
	t.Helper()
	out := filepath.Join(dir, strings.Fields(name)[0]+".json")
	args := []string{"load", "-qps", strconv.Itoa(settings.qps), "-c", strconv.Itoa(settings.conns),
		"-t", settings.duration.String(), "-payload-size", strconv.Itoa(settings.payload), "-json", out, "-quiet",
		// 100 µs histogram buckets: fortio's default (1 ms) interpolates
		// the percentiles of sub-millisecond latencies within one bucket.
		"-r", "0.0001"}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, url)
	// Warm up connections and caches.
	warm := exec.Command(fortio, "load", "-qps", strconv.Itoa(settings.qps), "-c", strconv.Itoa(settings.conns), "-t", "3s", "-quiet", "-payload-size", strconv.Itoa(settings.payload))
	if host != "" {
		warm.Args = append(warm.Args, "-H", "Host: "+host)
	}
	warm.Args = append(warm.Args, url)
	if b, err := warm.CombinedOutput(); err != nil {
		t.Fatalf("%s warm-up: %v\n%s", name, err, b)
	}
	before := cpuOf(pids)
	start := time.Now()
	if b, err := exec.Command(fortio, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: fortio: %v\n%s", name, err, b)
	}
	wall := time.Since(start).Seconds()
	after := cpuOf(pids)
	var fr struct {
		ActualQPS         float64
		RetCodes          map[string]int
		DurationHistogram struct {
			Percentiles []struct{ Percentile, Value float64 }
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fr); err != nil {
		t.Fatal(err)
	}
	r := result{name: name, qps: fr.ActualQPS}
	for code, n := range fr.RetCodes {
		if code != "200" {
			r.errors += n
		}
	}
	for _, p := range fr.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			r.p50 = p.Value * 1000
		case 90:
			r.p90 = p.Value * 1000
		case 99:
			r.p99 = p.Value * 1000
		}
	}
	for i := range pids {
		r.cpu = append(r.cpu, (after[i]-before[i])/wall)
		r.rss = append(r.rss, rssOf(pids[i]))
	}
	return r
}

func report(t *testing.T, title string, rs []result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s: %d qps, %d connections, %s, %d-byte payload; 2 cores shared by client, proxies and echo server\n",
		title, settings.qps, settings.conns, settings.duration, settings.payload)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tqps\terrors\tp50 ms\tp90 ms\tp99 ms\tadded p50/p90/p99 ms\tvCPU per proxy per 1000 rps\tRSS per proxy MiB")
	direct := rs[0]
	for _, r := range rs {
		added := "-"
		if r.name != direct.name {
			added = fmt.Sprintf("%.3f / %.3f / %.3f", r.p50-direct.p50, r.p90-direct.p90, r.p99-direct.p99)
		}
		var cpus, rsss []string
		for i := range r.cpu {
			cpus = append(cpus, fmt.Sprintf("%.3f", r.cpu[i]/(r.qps/1000)))
			rsss = append(rsss, fmt.Sprintf("%.1f", r.rss[i]))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\n", r.name, r.qps, r.errors, r.p50, r.p90, r.p99, added,
			strings.Join(cpus, " + "), strings.Join(rsss, " + "))
	}
	tw.Flush()
	t.Log(b.String())
	for _, r := range rs {
		if r.errors > 0 {
			t.Errorf("%s: %d failed requests", r.name, r.errors)
		}
	}
}

// cpuOf returns the CPU seconds (user+system) each process and its
// children (nginx workers) used so far.
func cpuOf(pids []int) []float64 {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		for _, p := range append([]int{pid}, children(pid)...) {
			out[i] += cpuSeconds(p)
		}
	}
	return out
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// rssOf is the resident memory of a process and its children, in MiB.
func rssOf(pid int) float64 {
	var total float64
	for _, p := range append([]int{pid}, children(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				total += kb / 1024
			}
		}
	}
	return total
}

func start(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if os.Getenv("MIZZEN_PERF_LOG") == "1" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	// A process group of its own: nginx's workers outlive a killed
	// master, and would keep the lock file of make bench-dataplane's
	// callers (flock) open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	return cmd
}

// profile saves a CPU profile of a proxy taken during its run.
func profile(t *testing.T, admin, path string) {
	time.Sleep(5 * time.Second) // past the warm-up
	secs := int(settings.duration.Seconds()) - 4
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, max(secs, 1)))
	if err != nil {
		t.Logf("profile %s: %v", admin, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

func waitHTTP(t *testing.T, url string) { waitHTTPHost(t, url, "") }

func waitHTTPHost(t *testing.T, url, host string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		args := []string{"curl", "-quiet"}
		if host != "" {
			args = append(args, "-H", "Host: "+host)
		}
		out, err := exec.Command(fortio, append(args, url)...).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering: %v\n%s", url, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
