// Package mesh runs a whole Mizzen mesh on one machine for end-to-end tests
// and benchmarks: the control plane (the built cmd/pilot binary) against a
// real API server (test/cluster), and proxies (the built cmd/proxy binary)
// as separate processes for workloads whose pods are real Pod objects.
//
// Everything travels over loopback. A dedicated kwok node has the pod CIDR
// 198.18.10.0/24 (a range reserved for benchmarking, RFC 2544), which Start
// makes local with `ip route add local 198.18.10.0/24 dev lo` (root is
// needed; Stop removes it): every pod placed on that node gets an address
// of the machine's own loopback device as its pod IP. Kubernetes refuses
// 127.0.0.0/8 in EndpointSlices, this range it accepts, so Services,
// EndpointSlices (made by the real controller manager) and the control
// plane all see those addresses, and the pod's proxy binds them. Proxies
// run with Istio's interception mode NONE: a workload's proxy listens for
// inbound traffic on the pod IP (198.18.10.N), forwards it to the
// application on 127.0.20.N, and offers outbound listeners to the
// application on 127.0.30.N.
package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/mizzen-mesh/mizzen/test/cluster"
)

// Namespace is the control plane's namespace.
const Namespace = "istio-system"

// ServerName is the name proxies verify in the control plane's certificate.
const ServerName = "istiod.istio-system.svc"

// LoopbackNode is the kwok node whose pods get loopback addresses.
const LoopbackNode = "mesh-loopback"

// PodCIDR is the loopback node's pod range, local to this machine.
const PodCIDR = "198.18.10.0/24"

// Mesh is a running control plane plus the proxies started through it.
type Mesh struct {
	Cluster *cluster.Cluster
	CS      kubernetes.Interface
	BinDir  string
	Dir     string
	// RootCertFile holds the mesh root, as proxies get it from the
	// istio-ca-root-cert ConfigMap.
	RootCertFile string
	// PilotAddrs are the control plane's bound addresses.
	PilotAddrs PilotAddresses
	grpcPort   int
	log        io.Writer

	mu      sync.Mutex
	pilot   *Process
	workers []*Workload
}

// PilotAddresses is what the control plane writes to --addresses-file.
type PilotAddresses struct {
	GRPC       string `json:"grpc"`
	HTTP       string `json:"http"`
	Monitoring string `json:"monitoring"`
	Webhook    string `json:"webhook"`
}

// Build compiles cmd/pilot and cmd/proxy into dir.
func Build(ctx context.Context, dir string) error {
	root, err := cluster.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", cluster.BuildTags, "-o", dir+"/", "./cmd/pilot", "./cmd/proxy")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the mesh binaries: %v\n%s", err, out)
	}
	return nil
}

// Start builds the binaries, prepares the cluster (control plane
// namespace, the loopback node) and starts the control plane. log receives
// every process's output (io.Discard to drop it).
func Start(ctx context.Context, c *cluster.Cluster, dir string, log io.Writer) (*Mesh, error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	m := &Mesh{Cluster: c, CS: cs, Dir: dir, BinDir: filepath.Join(dir, "bin"), log: log}
	if err := Build(ctx, m.BinDir); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "ip", "route", "replace", "local", PodCIDR, "dev", "lo").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("making %s local (needs root): %v: %s", PodCIDR, err, out)
	}
	if err := m.createLoopbackNode(ctx); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m.grpcPort = port
	if err := m.StartPilot(ctx); err != nil {
		return nil, err
	}
	// The root as proxies see it: the ConfigMap the CA publishes.
	m.RootCertFile = filepath.Join(dir, "root-cert.pem")
	if err := waitFor(ctx, 30*time.Second, "the istio-ca-root-cert ConfigMap", func() error {
		cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data["root-cert.pem"] == "" {
			return errors.New("no root-cert.pem")
		}
		return os.WriteFile(m.RootCertFile, []byte(cm.Data["root-cert.pem"]), 0o600)
	}); err != nil {
		return nil, err
	}
	return m, nil
}

// StartPilot starts the control plane process (again, after StopPilot),
// always on the same xDS port, and waits until it is ready.
func (m *Mesh) StartPilot(ctx context.Context) error {
	meshFile := filepath.Join(m.Dir, "mesh.yaml")
	if err := os.WriteFile(meshFile, []byte("trustDomain: cluster.local\nrootNamespace: "+Namespace+"\ndefaultConfig:\n  discoveryAddress: "+ServerName+":15012\n"), 0o600); err != nil {
		return err
	}
	addrFile := filepath.Join(m.Dir, "pilot-addresses.json")
	_ = os.Remove(addrFile)
	args := []string{"discovery",
		"--kubeconfig=" + m.Cluster.Kubeconfig,
		"--meshConfig=" + meshFile,
		"--namespace=" + Namespace,
		"--revision=default",
		"--cacerts=" + filepath.Join(m.Dir, "no-cacerts"),
		fmt.Sprintf("--grpcAddr=127.0.0.1:%d", m.grpcPort),
		"--httpAddr=127.0.0.1:0",
		"--monitoringAddr=127.0.0.1:0",
		"--webhookAddr=127.0.0.1:0",
		"--tls-extra-sans=127.0.0.1,localhost",
		"--addresses-file=" + addrFile,
		"--log-level=info",
	}
	p, err := StartProcess(filepath.Join(m.BinDir, "pilot"), args, nil, m.prefixed("pilot"))
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "the control plane to be ready", func() error {
		if exited, err := p.Exited(); exited {
			return backoffStop{fmt.Errorf("the control plane exited: %v", err)}
		}
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &m.PilotAddrs); err != nil {
			return err
		}
		return httpOK("http://" + m.PilotAddrs.HTTP + "/ready")
	}); err != nil {
		p.Kill()
		return err
	}
	m.mu.Lock()
	m.pilot = p
	m.mu.Unlock()
	return nil
}

// StopPilot stops the control plane: SIGKILL when kill, else SIGTERM.
func (m *Mesh) StopPilot(kill bool) {
	m.mu.Lock()
	p := m.pilot
	m.pilot = nil
	m.mu.Unlock()
	if p == nil {
		return
	}
	if kill {
		p.Kill()
	} else {
		p.Stop(15 * time.Second)
	}
}

// Stop stops every proxy and the control plane.
func (m *Mesh) Stop() {
	m.mu.Lock()
	ws := m.workers
	m.workers = nil
	m.mu.Unlock()
	for _, w := range ws {
		w.Stop()
	}
	m.StopPilot(false)
	_ = exec.Command("ip", "route", "del", "local", PodCIDR, "dev", "lo").Run()
}

// PilotMetrics returns the control plane's /metrics text.
func (m *Mesh) PilotMetrics() (string, error) {
	return httpGet("http://" + m.PilotAddrs.Monitoring + "/metrics")
}

func (m *Mesh) prefixed(name string) io.Writer {
	if m.log == io.Discard || m.log == nil {
		return io.Discard
	}
	return &prefixWriter{w: m.log, prefix: name + ": "}
}

func (m *Mesh) createLoopbackNode(ctx context.Context) error {
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        LoopbackNode,
			Annotations: map[string]string{cluster.KwokNodeAnnotation: cluster.KwokNodeAnnotationValue},
			Labels:      map[string]string{cluster.NodeTypeLabel: "kwok", "kubernetes.io/hostname": LoopbackNode, "kubernetes.io/os": "linux"},
		},
		Spec: corev1.NodeSpec{
			PodCIDR: PodCIDR, PodCIDRs: []string{PodCIDR},
			// Only pods placed here by name run here.
			Taints: []corev1.Taint{{Key: "mizzen.dev/loopback", Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res},
	}
	if _, err := m.CS.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the loopback node: %w", err)
	}
	return waitFor(ctx, 60*time.Second, "the loopback node to be Ready", func() error {
		n, err := m.CS.CoreV1().Nodes().Get(ctx, LoopbackNode, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not Ready")
	})
}

// WorkloadOptions describe one pod and its proxy.
type WorkloadOptions struct {
	Namespace      string
	Name           string // pod name
	ServiceAccount string // default: Name
	Labels         map[string]string
	// Ports are the application's container ports. App serves each of them
	// on the workload's application address (AppIP).
	Ports []int32
	App   http.Handler
	// Router makes the proxy a gateway (proxy router --gateway-name=Name).
	Router bool
	// NoProxy starts only the pod and the application (a workload outside
	// the mesh).
	NoProxy bool
	// Env is added to the proxy's environment.
	Env []string
}

// Workload is a running pod: its application servers and its proxy.
type Workload struct {
	Name, Namespace string
	Pod             *corev1.Pod
	// PodIP is where the proxy takes inbound traffic (and a gateway its
	// listeners); AppIP is the application's address; OutboundIP is where
	// the proxy offers outbound listeners to the application.
	PodIP, AppIP, OutboundIP string
	Proxy                    *Process
	apps                     []*http.Server
}

// StatsURL is the proxy's Prometheus endpoint.
func (w *Workload) StatsURL() string { return "http://" + w.PodIP + ":15090/stats/prometheus" }

// AdminURL is the proxy's admin server.
func (w *Workload) AdminURL() string { return "http://" + w.PodIP + ":15000" }

// Stop stops the proxy (SIGTERM) and the application servers.
func (w *Workload) Stop() {
	if w.Proxy != nil {
		w.Proxy.Stop(15 * time.Second)
	}
	for _, s := range w.apps {
		_ = s.Close()
	}
}

// AddWorkload creates the pod (on the loopback node) and its
// ServiceAccount, serves the application, and starts the proxy with a
// projected-style token for the ServiceAccount, then waits until the proxy
// is ready.
func (m *Mesh) AddWorkload(ctx context.Context, o WorkloadOptions) (*Workload, error) {
	if o.ServiceAccount == "" {
		o.ServiceAccount = o.Name
	}
	cs := m.CS
	if _, err := cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: o.ServiceAccount}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	var ports []corev1.ContainerPort
	for _, p := range o.Ports {
		ports = append(ports, corev1.ContainerPort{ContainerPort: p, Protocol: corev1.ProtocolTCP})
	}
	labels := map[string]string{}
	for k, v := range o.Labels {
		labels[k] = v
	}
	if !o.NoProxy {
		labels["security.istio.io/tlsMode"] = "istio"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:           LoopbackNode,
			ServiceAccountName: o.ServiceAccount,
			Tolerations:        []corev1.Toleration{{Key: "mizzen.dev/loopback", Operator: corev1.TolerationOpExists}},
			Containers:         []corev1.Container{{Name: "app", Image: "app", Ports: ports}},
		},
	}
	if _, err := cs.CoreV1().Pods(o.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", o.Namespace, o.Name, err)
	}
	w := &Workload{Name: o.Name, Namespace: o.Namespace}
	if err := waitFor(ctx, 60*time.Second, "pod "+o.Name+" to be ready with an IP", func() error {
		p, err := cs.CoreV1().Pods(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.PodIP == "" {
			return errors.New("no pod IP yet")
		}
		w.Pod = p
		return nil
	}); err != nil {
		return nil, err
	}
	w.PodIP = w.Pod.Status.PodIP
	ip, err := netip.ParseAddr(w.PodIP)
	if err != nil || !netip.MustParsePrefix(PodCIDR).Contains(ip) {
		return nil, fmt.Errorf("pod %s got IP %q, not one of %s", o.Name, w.PodIP, PodCIDR)
	}
	last := ip.As4()[3]
	w.AppIP = fmt.Sprintf("127.0.20.%d", last)
	w.OutboundIP = fmt.Sprintf("127.0.30.%d", last)
	if o.App != nil {
		for _, p := range o.Ports {
			l, err := net.Listen("tcp", net.JoinHostPort(w.AppIP, fmt.Sprint(p)))
			if err != nil {
				w.Stop()
				return nil, fmt.Errorf("serving the application of %s: %w", o.Name, err)
			}
			s := &http.Server{Handler: o.App, ReadHeaderTimeout: 10 * time.Second}
			go func() { _ = s.Serve(l) }()
			w.apps = append(w.apps, s)
		}
	}
	if o.NoProxy {
		return w, nil
	}
	tok, err := cs.CoreV1().ServiceAccounts(o.Namespace).CreateToken(ctx, o.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{"istio-ca"},
			ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: o.Name, UID: w.Pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		w.Stop()
		return nil, fmt.Errorf("token for %s: %w", o.ServiceAccount, err)
	}
	tokenFile := filepath.Join(m.Dir, o.Namespace+"-"+o.Name+".token")
	if err := os.WriteFile(tokenFile, []byte(tok.Status.Token), 0o600); err != nil {
		return nil, err
	}
	mode := "sidecar"
	args := []string{}
	if o.Router {
		mode = "router"
		args = append(args, "--gateway-name="+o.Name, "--bind-address="+w.PodIP)
	}
	args = append([]string{mode,
		"--discovery-address=" + fmt.Sprintf("127.0.0.1:%d", m.grpcPort),
		"--server-name=" + ServerName,
		"--root-cert=" + m.RootCertFile,
		"--token-file=" + tokenFile,
		"--admin-address=" + w.PodIP + ":15000",
		"--status-address=" + w.PodIP + ":15020",
		"--health-address=" + w.PodIP + ":15021",
		"--stats-address=" + w.PodIP + ":15090",
		"--log-level=info",
	}, args...)
	for k, v := range labels {
		args = append(args, "--labels="+k+"="+v)
	}
	env := append([]string{
		"POD_NAME=" + o.Name,
		"POD_NAMESPACE=" + o.Namespace,
		"INSTANCE_IP=" + w.PodIP,
		"SERVICE_ACCOUNT=" + o.ServiceAccount,
		"TRUST_DOMAIN=cluster.local",
		"ISTIO_META_CLUSTER_ID=Kubernetes",
		"ISTIO_META_WORKLOAD_NAME=" + o.Name,
		"ISTIO_META_INTERCEPTION_MODE=NONE",
		"ISTIO_META_INBOUND_BIND_ADDRESS=" + w.PodIP,
		"ISTIO_META_OUTBOUND_BIND_ADDRESS=" + w.OutboundIP,
		"ISTIO_META_APP_ADDRESS=" + w.AppIP,
		`PROXY_CONFIG={"terminationDrainDuration":"3s"}`,
	}, o.Env...)
	w.Proxy, err = StartProcess(filepath.Join(m.BinDir, "proxy"), args, env, m.prefixed("proxy "+o.Namespace+"/"+o.Name))
	if err != nil {
		w.Stop()
		return nil, err
	}
	if err := waitFor(ctx, 60*time.Second, "proxy "+o.Name+" to be ready", func() error {
		if exited, err := w.Proxy.Exited(); exited {
			return backoffStop{fmt.Errorf("proxy %s exited: %v\n%s", o.Name, err, w.Proxy.Tail())}
		}
		return httpOK("http://" + w.PodIP + ":15021/healthz/ready")
	}); err != nil {
		w.Stop()
		return nil, err
	}
	m.mu.Lock()
	m.workers = append(m.workers, w)
	m.mu.Unlock()
	return w, nil
}

// Process is a child process with its output kept for diagnostics.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	tail *tailBuffer
}

// StartProcess starts bin with args; env is added to this process's.
func StartProcess(bin string, args, env []string, out io.Writer) (*Process, error) {
	p := &Process{cmd: exec.Command(bin, args...), done: make(chan struct{}), tail: &tailBuffer{max: 16 << 10}}
	p.cmd.Env = append(os.Environ(), env...)
	w := io.MultiWriter(out, p.tail)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and waits up to timeout, then kills. It returns the
// exit error (nil for exit status 0).
func (p *Process) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v", filepath.Base(p.cmd.Path), timeout)
	}
}

// Kill sends SIGKILL and waits.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Tail is the end of the process's output.
func (p *Process) Tail() string { return p.tail.String() }

type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		_, _ = fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// backoffStop ends waitFor early.
type backoffStop struct{ error }

func waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var stop backoffStop
		if errors.As(err, &stop) {
			return fmt.Errorf("waiting for %s: %w", what, stop.error)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func httpOK(url string) error {
	_, err := httpGet(url)
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
