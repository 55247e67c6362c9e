// Package cluster runs a real, local Kubernetes control plane for
// integration tests and local runs: kube-apiserver and etcd (through
// controller-runtime's envtest), kube-controller-manager, kube-scheduler,
// and kwok playing the kubelet for fake nodes. Pods are scheduled and
// reported Running and Ready but never run; their IPs are fake, so never
// send traffic to them.
//
// The binaries come from hack/setup-kube.sh, which builds them into
// $MIZZEN_CACHE/kube-v1.36.3/bin (default ~/.cache/mizzen/...).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const (
	// KwokNodeAnnotation marks the nodes kwok manages.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// KwokNodeAnnotationValue is the value of KwokNodeAnnotation.
	KwokNodeAnnotationValue = "fake"
	// NodeTypeLabel is set to "kwok" on the fake nodes.
	NodeTypeLabel = "type"

	// SmokeImage is the image of the deployment Start uses to check the
	// cluster (never pulled: kwok runs no containers).
	SmokeImage = "registry.k8s.io/pause:3.10"

	defaultStartTimeout = 60 * time.Second
)

// Options configures Start. The zero value is usable.
type Options struct {
	// BinDir holds kube-apiserver, etcd, kube-controller-manager,
	// kube-scheduler and kwok. Default: $MIZZEN_KUBE_BIN, else the cache
	// directory of hack/setup-kube.sh.
	BinDir string
	// SetupBinaries runs hack/setup-kube.sh first (a no-op when its cache is
	// current, a long build otherwise, with progress on stderr) when BinDir
	// and $MIZZEN_KUBE_BIN are empty. Tests leave it off and fail fast with
	// instructions instead.
	SetupBinaries bool
	// Nodes is how many fake kwok nodes to create. Default 2.
	Nodes int
	// CRDDirectoryPaths are installed after the cluster works, as envtest does.
	CRDDirectoryPaths []string
	// Scheme is used by envtest when installing CRDs (conversion webhooks).
	// Default: client-go's scheme.
	Scheme *runtime.Scheme
	// WebhookInstallOptions, if set, are installed like envtest does, after
	// the cluster works; on return it holds the values envtest filled in
	// (LocalServingHost, LocalServingPort, LocalServingCertDir, ...).
	WebhookInstallOptions *envtest.WebhookInstallOptions
	// Log receives the output of every process, each line prefixed with the
	// process name. Default io.Discard, or os.Stderr if MIZZEN_CLUSTER_LOG=1.
	Log io.Writer
	// StartTimeout bounds how long the cluster may take to work after
	// kube-apiserver is up. Default 60s.
	StartTimeout time.Duration
}

// Cluster is a running control plane. Stop it when done.
type Cluster struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file (in a temporary
	// directory removed by Stop).
	Kubeconfig string
	// Env is the envtest environment running kube-apiserver and etcd.
	Env *envtest.Environment
	// BinDir is where the binaries came from.
	BinDir string
	// Nodes are the names of the fake nodes.
	Nodes []string

	dir        string
	out        *lockedWriter
	spawner    *spawner
	procs      []*process // in start order
	stopWD     func()
	envStarted bool
	apiLog     *logTail
	etcdLog    *logTail

	stopOnce sync.Once
	stopErr  error
}

// Start starts a cluster and returns once it works end to end: the fake
// nodes are Ready and a test Deployment got its pods scheduled and Ready.
// ctx bounds the start only; the cluster runs until Stop (or until this
// process dies: every child process dies with it).
func Start(ctx context.Context, opts Options) (_ *Cluster, retErr error) {
	if opts.Nodes <= 0 {
		opts.Nodes = 2
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = defaultStartTimeout
	}
	if opts.Log == nil {
		opts.Log = io.Discard
		if os.Getenv(EnvLog) == "1" {
			opts.Log = os.Stderr
		}
	}
	if opts.Scheme == nil {
		opts.Scheme = clientgoscheme.Scheme
	}

	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = DefaultBinDir(); err != nil {
			return nil, err
		}
		if opts.SetupBinaries && os.Getenv(EnvKubeBin) == "" {
			if binDir, err = SetupBinaries(ctx, os.Stderr); err != nil {
				return nil, err
			}
		}
	}
	if err := CheckBinDir(binDir); err != nil {
		return nil, err
	}
	stageFiles, err := kwokStageFiles(binDir)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "mizzen-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		BinDir:  binDir,
		dir:     dir,
		out:     &lockedWriter{w: opts.Log},
		spawner: newSpawner(),
	}
	defer func() {
		if retErr != nil {
			_ = c.Stop()
		}
	}()

	// kube-apiserver and etcd, through envtest. CRDs and webhooks are
	// installed only once the cluster is known to work, so that a webhook
	// whose server is not up yet cannot break the check below.
	c.apiLog = newLogTail("kube-apiserver", c.out)
	c.etcdLog = newLogTail("etcd", c.out)
	c.Env = &envtest.Environment{
		BinaryAssetsDirectory:    binDir,
		UseExistingCluster:       ptr.To(false),
		ControlPlaneStartTimeout: opts.StartTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
		Scheme:                   opts.Scheme,
	}
	c.Env.ControlPlane.APIServer = &envtest.APIServer{
		Path: filepath.Join(binDir, "kube-apiserver"),
		Out:  c.apiLog,
		Err:  c.apiLog,
	}
	c.Env.ControlPlane.Etcd = &envtest.Etcd{
		Path: filepath.Join(binDir, "etcd"),
		Out:  c.etcdLog,
		Err:  c.etcdLog,
	}
	c.envStarted = true // Stop must clean up even after a failed start
	if _, err := c.Env.Start(); err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd: %w\nkube-apiserver:\n%s\netcd:\n%s",
			err, c.apiLog.Tail(30), c.etcdLog.Tail(15))
	}
	if wd, err := startWatchdog(c.spawner, c.Env.ControlPlane.APIServer.Path, c.Env.ControlPlane.Etcd.Path); err == nil && wd != nil {
		c.stopWD = func() { stopWatchdog(wd) }
	}

	// Admin user and kubeconfig for the other processes and for callers.
	admin, err := c.Env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}},
		&rest.Config{QPS: 1000, Burst: 2000})
	if err != nil {
		return nil, fmt.Errorf("adding the admin user: %w", err)
	}
	c.Config = admin.Config()
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, c.Env.ControlPlane.APIServer.SecureServing.CA, 0o600); err != nil {
		return nil, err
	}

	if err := c.startComponents(ctx, stageFiles); err != nil {
		return nil, err
	}

	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := c.createNodes(readyCtx, cs, opts.Nodes); err != nil {
		return nil, err
	}
	if err := c.checkWorks(readyCtx, cs); err != nil {
		return nil, err
	}

	if err := c.installCRDsAndWebhooks(opts); err != nil {
		return nil, err
	}
	return c, nil
}

// startComponents starts kube-controller-manager, kube-scheduler and kwok.
func (c *Cluster) startComponents(ctx context.Context, stageFiles []string) error {
	// The processes outlive ctx, which bounds only the start.
	pctx := context.WithoutCancel(ctx)
	apiServer := c.Env.ControlPlane.APIServer

	kcmArgs := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--cluster-name=mizzen",
		"--root-ca-file=" + filepath.Join(c.dir, "ca.crt"),
		// The kwok nodes never fail; a 2-core machine under load can delay
		// kwok's node heartbeats past the default 50s grace, after which the
		// node controller would mark every pod NotReady. Node failure is not
		// what these clusters test.
		"--node-monitor-grace-period=30m",
	}
	// envtest's API server signs service account tokens with this key; the
	// token controller must use the same one (without it, it cannot run).
	saKey := filepath.Join(apiServer.CertDir, "sa-signer.key")
	if _, err := os.Stat(saKey); err == nil {
		kcmArgs = append(kcmArgs, "--controllers=*", "--service-account-private-key-file="+saKey)
	} else {
		kcmArgs = append(kcmArgs, "--controllers=*,-serviceaccount-token-controller")
	}

	kwokHome := filepath.Join(c.dir, "kwok-home")
	if err := os.MkdirAll(kwokHome, 0o700); err != nil {
		return err
	}
	kwokArgs := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=" + KwokNodeAnnotationValue,
		"--cidr=10.244.0.0/16",
		"--node-port=0", // no kubelet-style server: nothing to collide with
	}
	for _, f := range stageFiles {
		kwokArgs = append(kwokArgs, "--config="+f)
	}
	// A private HOME keeps kwok from reading the user's ~/.kwok/kwok.yaml.
	kwokEnv := append(os.Environ(), "HOME="+kwokHome)

	specs := []struct {
		name string
		args []string
		env  []string
	}{
		{"kube-controller-manager", kcmArgs, nil},
		{"kube-scheduler", []string{"--kubeconfig=" + c.Kubeconfig, "--leader-elect=false", "--secure-port=0"}, nil},
		{"kwok", kwokArgs, kwokEnv},
	}
	for _, s := range specs {
		p, err := startProcess(pctx, c.spawner, s.name, filepath.Join(c.BinDir, s.name), s.args, s.env, c.out)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
	}
	return nil
}

// createNodes registers n fake nodes for kwok to manage.
func (c *Cluster) createNodes(ctx context.Context, cs kubernetes.Interface, n int) error {
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for i := range n {
		name := fmt.Sprintf("kwok-node-%d", i)
		podCIDR := fmt.Sprintf("10.244.%d.0/24", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{KwokNodeAnnotation: KwokNodeAnnotationValue},
				Labels: map[string]string{
					NodeTypeLabel:            "kwok",
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     goruntime.GOARCH,
					"kubernetes.io/hostname": name,
				},
			},
			Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
			Status: corev1.NodeStatus{
				Capacity:    res.DeepCopy(),
				Allocatable: res.DeepCopy(),
				Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.243.0.%d", i+1)},
					{Type: corev1.NodeHostName, Address: name},
				},
			},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
		c.Nodes = append(c.Nodes, name)
	}
	return c.waitFor(ctx, fmt.Sprintf("%d kwok nodes to become Ready", n), func(ctx context.Context) (bool, error) {
		for _, name := range c.Nodes {
			node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if !nodeReady(node) {
				return false, nil
			}
		}
		return true, nil
	})
}

func nodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkWorks proves the controllers, the scheduler and kwok work together:
// a Deployment gets 2 Ready pods, and goes away again with its pods.
func (c *Cluster) checkWorks(ctx context.Context, cs kubernetes.Interface) error {
	const ns, name = metav1.NamespaceDefault, "mizzen-cluster-smoke"
	if err := c.waitFor(ctx, "the default ServiceAccount (kube-controller-manager)", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return err
	}

	labels := map[string]string{"app.kubernetes.io/name": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "pause", Image: SmokeImage}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the check deployment: %w", err)
	}
	if err := c.waitFor(ctx, "the check deployment to have 2 ready replicas", func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return d.Status.ReadyReplicas == 2, nil
	}); err != nil {
		return err
	}
	if err := cs.AppsV1().Deployments(ns).Delete(ctx, name, metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationForeground),
	}); err != nil {
		return fmt.Errorf("deleting the check deployment: %w", err)
	}
	return c.waitFor(ctx, "the check deployment and its pods to be deleted", func(ctx context.Context) (bool, error) {
		_, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
		return err == nil && len(pods.Items) == 0, nil
	})
}

// waitFor polls cond until it holds, a process exits, or ctx ends.
func (c *Cluster) waitFor(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range c.procs {
			if done, _ := p.exited(); done {
				return fmt.Errorf("waiting for %s: %w", what, p.exitError())
			}
		}
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s (%w); recent output:\n%s", what, ctx.Err(), c.tails(15))
		case <-tick.C:
		}
	}
}

// tails returns the last lines of every process's output.
func (c *Cluster) tails(n int) string {
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "--- %s:\n%s\n", p.name, p.log.Tail(n))
	}
	if c.apiLog != nil {
		fmt.Fprintf(&b, "--- kube-apiserver:\n%s\n", c.apiLog.Tail(n))
	}
	return b.String()
}

// installCRDsAndWebhooks does what envtest.Environment.Start does with
// CRDDirectoryPaths and WebhookInstallOptions.
func (c *Cluster) installCRDsAndWebhooks(opts Options) error {
	if opts.WebhookInstallOptions != nil {
		c.Env.WebhookInstallOptions = *opts.WebhookInstallOptions
		if err := c.Env.WebhookInstallOptions.PrepWithoutInstalling(); err != nil {
			return fmt.Errorf("preparing webhooks: %w", err)
		}
	}
	if len(opts.CRDDirectoryPaths) > 0 {
		c.Env.CRDDirectoryPaths = opts.CRDDirectoryPaths
		c.Env.ErrorIfCRDPathMissing = true
		o := &c.Env.CRDInstallOptions
		o.Scheme = opts.Scheme
		o.Paths = opts.CRDDirectoryPaths
		o.ErrorIfPathMissing = true
		o.WebhookOptions = c.Env.WebhookInstallOptions
		crds, err := envtest.InstallCRDs(c.Config, *o)
		if err != nil {
			return fmt.Errorf("installing CRDs: %w", err)
		}
		c.Env.CRDs = crds
	}
	if opts.WebhookInstallOptions != nil {
		if err := c.Env.WebhookInstallOptions.Install(c.Config); err != nil {
			return fmt.Errorf("installing webhooks: %w", err)
		}
		*opts.WebhookInstallOptions = c.Env.WebhookInstallOptions
	}
	return nil
}

// Client returns a controller-runtime client for the admin user. A nil
// scheme means client-go's scheme.
func (c *Cluster) Client(scheme *runtime.Scheme) (client.Client, error) {
	if scheme == nil {
		scheme = clientgoscheme.Scheme
	}
	return client.New(c.Config, client.Options{Scheme: scheme})
}

// WriteKubeconfig writes the admin kubeconfig to path, creating its
// directory.
func (c *Cluster) WriteKubeconfig(path string) error {
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ServiceAccountSigningKeyFile is the PEM private key the API server signs
// ServiceAccount tokens with ("" when the API server generated none), for
// tests that need a token the API server itself would have issued, e.g.
// one already expired, which TokenRequest refuses to mint.
func (c *Cluster) ServiceAccountSigningKeyFile() string {
	f := filepath.Join(c.Env.ControlPlane.APIServer.CertDir, "sa-signer.key")
	if _, err := os.Stat(f); err != nil {
		return ""
	}
	return f
}

// Host returns the API server's address, host:port.
func (c *Cluster) Host() string {
	u := c.Env.ControlPlane.APIServer.SecureServing
	return net.JoinHostPort(u.Address, u.Port)
}

// Stop stops kwok, kube-scheduler and kube-controller-manager (SIGTERM, then
// SIGKILL after 5s), then kube-apiserver and etcd, and removes the
// temporary files. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, p := range c.procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.stop()
			}()
		}
		wg.Wait()
		if c.stopWD != nil {
			c.stopWD()
		}
		var errs []error
		if c.envStarted && c.Env != nil {
			if err := c.Env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping kube-apiserver and etcd: %w", err))
			}
		}
		if c.spawner != nil {
			c.spawner.close()
		}
		if c.dir != "" {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, err)
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// DefaultLocalKubeconfig is where RunLocal writes the kubeconfig by default:
// $MIZZEN_CACHE/local/kubeconfig (~/.cache/mizzen/local/kubeconfig).
func DefaultLocalKubeconfig() (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "local", "kubeconfig"), nil
}

// RunLocal starts a cluster for local development (building the binaries
// first if needed), writes its admin kubeconfig to kubeconfigOut, prints
// "export KUBECONFIG=..." to stdout, and runs until ctx is done; then it
// stops the cluster and removes the kubeconfig.
func RunLocal(ctx context.Context, opts Options, kubeconfigOut string, stdout io.Writer) error {
	if opts.BinDir == "" {
		opts.SetupBinaries = true
	}
	start := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()
	if err := c.WriteKubeconfig(kubeconfigOut); err != nil {
		return err
	}
	defer func() { _ = os.Remove(kubeconfigOut) }()
	fmt.Fprintf(os.Stderr, "cluster: Kubernetes %s at https://%s with %d kwok nodes, ready in %v; stop with Ctrl-C\n",
		KubeVersion, c.Host(), len(c.Nodes), time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "export KUBECONFIG=%s\n", kubeconfigOut)
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "cluster: stopping")
		return c.Stop()
	case p := <-c.firstExit():
		return p.exitError()
	}
}

// firstExit yields the first of the cluster's own processes to exit.
func (c *Cluster) firstExit() <-chan *process {
	ch := make(chan *process, len(c.procs))
	for _, p := range c.procs {
		go func() {
			<-p.done
			ch <- p
		}()
	}
	return ch
}
