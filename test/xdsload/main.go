// Command xdsload measures how fast the control plane converges: it opens
// many ADS streams (distinct node ids, client certificates issued by
// pilot's CA for a few ServiceAccounts), ACKs everything like a proxy,
// waits until every stream holds its routes, then changes one
// VirtualService and reports, per stream, the time from the change until
// it ACKed the new routes. The result is one JSON object on stdout.
//
// The streams decode endpoints and routes only as far as the envelope
// (type, version, nonce; xdsclient.EnvelopeCodec): every stream receives
// the full route configuration on a change, and decoding 2000 copies of it
// on the same cores would measure this process rather than the control
// plane. Clusters and listeners are decoded (once per version) to follow
// their EDS and RDS names.
//
//	xdsload --kubeconfig=k --addr=127.0.0.1:15012 --root=root-cert.pem \
//	  --identities=bench/sa-0,bench/sa-1 --proxies=2000 --trigger=bench/vs-0
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

// Result is what xdsload prints.
type Result struct {
	Proxies int `json:"proxies"`
	// ConnectSeconds is the time until every stream held routes and
	// endpoints.
	ConnectSeconds float64 `json:"connectSeconds"`
	// Converged is how many streams ACKed the changed routes.
	Converged int `json:"converged"`
	// Convergence percentiles, seconds from the VirtualService update
	// until a stream ACKed the new routes.
	// Min is the first stream's: how long the control plane took to
	// notice the change, debounce and generate, before sending.
	Min, P50, P90, P99, Max float64
	// LoadCPUSeconds is this process's CPU time from the change until
	// every stream converged (it shares the machine with pilot).
	LoadCPUSeconds float64  `json:"loadCPUSeconds"`
	Errors         []string `json:"errors,omitempty"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("xdsload failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	var (
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig of the cluster (tokens and the trigger)")
		addr       = flag.String("addr", "127.0.0.1:15012", "pilot's xDS/CA TLS address")
		rootFile   = flag.String("root", "", "PEM root certificate of the mesh")
		serverName = flag.String("server-name", "istiod.istio-system.svc", "name pilot's certificate is checked against")
		identities = flag.String("identities", "", "comma-separated namespace/serviceaccount to issue client certificates for")
		proxies    = flag.Int("proxies", 2000, "number of ADS streams")
		perConn    = flag.Int("streams-per-conn", 100, "streams sharing one gRPC connection")
		trigger    = flag.String("trigger", "", "namespace/name of the VirtualService to change")
		timeout    = flag.Duration("timeout", 10*time.Minute, "bound of each phase")
	)
	flag.Parse()
	if *kubeconfig == "" || *rootFile == "" || *identities == "" || *trigger == "" {
		return errors.New("--kubeconfig, --root, --identities and --trigger are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	istio, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	rootPEM, err := os.ReadFile(*rootFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		return fmt.Errorf("%s holds no certificate", *rootFile)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type ident struct{ ns, sa string }
	var ids []ident
	var tlsCfgs []*tls.Config
	for _, s := range strings.Split(*identities, ",") {
		ns, sa, ok := strings.Cut(s, "/")
		if !ok {
			return fmt.Errorf("identity %q is not namespace/serviceaccount", s)
		}
		cert, err := issue(ctx, kube, *addr, pool, *serverName, ns, sa)
		if err != nil {
			return fmt.Errorf("certificate for %s: %w", s, err)
		}
		ids = append(ids, ident{ns, sa})
		tlsCfgs = append(tlsCfgs, &tls.Config{RootCAs: pool, ServerName: *serverName, Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}

	// Streams.
	names := &xdsclient.NameCache{}
	type proxyState struct {
		initial  atomic.Value // string: routes version before the trigger
		routes   atomic.Value // string: last acked routes version
		eds      atomic.Bool
		done     atomic.Int64 // unix nanos of the ACK of the new routes
		triggerd *atomic.Int64
	}
	var triggered atomic.Int64
	states := make([]*proxyState, *proxies)
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	connFor := map[string]*grpc.ClientConn{}
	start := time.Now()
	clients := make([]*xdsclient.Client, *proxies)
	for i := 0; i < *proxies; i++ {
		id := ids[i%len(ids)]
		key := fmt.Sprintf("%d/%d", i%len(ids), i/(len(ids)**perConn))
		conn, ok := connFor[key]
		if !ok {
			conn, err = grpc.NewClient(*addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfgs[i%len(ids)])),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.ForceCodecV2(xdsclient.EnvelopeCodec{})))
			if err != nil {
				return err
			}
			connFor[key] = conn
			conns = append(conns, conn)
		}
		st := &proxyState{triggerd: &triggered}
		st.routes.Store("")
		states[i] = st
		ip := fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256)
		pod := fmt.Sprintf("xdsload-%d", i)
		md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": id.ns, "NAME": pod, "SERVICE_ACCOUNT": id.sa,
			"INSTANCE_IPS": ip, "LABELS": `{"app":"xdsload"}`})
		node := &corev3.Node{Id: fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, pod, id.ns, id.ns), Metadata: md}
		c, err := xdsclient.Dial(ctx, conn, xdsclient.Options{Node: node, Light: true, Names: names,
			OnUpdate: func(u xdsclient.Update) {
				switch u.TypeURL {
				case xdsclient.EndpointType:
					st.eds.Store(true)
				case xdsclient.RouteType:
					st.routes.Store(u.Version)
					if t := st.triggerd.Load(); t != 0 && st.done.Load() == 0 {
						if init, _ := st.initial.Load().(string); u.Version != init {
							st.done.Store(time.Now().UnixNano())
						}
					}
				}
			}})
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		clients[i] = c
	}
	log.Info("streams opened", "proxies", *proxies, "connections", len(conns), "took", time.Since(start))
	if err := waitAll(ctx, *timeout, clients, func(i int) bool {
		return states[i].eds.Load() && states[i].routes.Load().(string) != ""
	}); err != nil {
		return fmt.Errorf("initial configuration: %w", err)
	}
	res := Result{Proxies: *proxies, ConnectSeconds: time.Since(start).Seconds()}
	log.Info("every stream holds routes and endpoints", "took", time.Since(start))
	time.Sleep(2 * time.Second) // let pushes caused by the connections settle
	for _, st := range states {
		st.initial.Store(st.routes.Load().(string))
	}

	// Trigger.
	ns, name, _ := strings.Cut(*trigger, "/")
	vs, err := istio.NetworkingV1().VirtualServices(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, h := range vs.Spec.GetHttp() {
		for _, r := range h.GetRoute() {
			if r.GetWeight() != 0 {
				r.Weight = 100 - r.GetWeight()
			}
		}
		h.Name = fmt.Sprintf("xdsload-%d", time.Now().UnixNano())
	}
	if f := os.Getenv("XDSLOAD_CPUPROFILE"); f != "" {
		// The change phase's CPU profile of this process.
		out, err := os.Create(f)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	triggered.Store(t0.UnixNano())
	if _, err := istio.NetworkingV1().VirtualServices(ns).Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
		return err
	}
	waitErr := waitAll(ctx, *timeout, clients, func(i int) bool { return states[i].done.Load() != 0 })
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := func(r syscall.Rusage) float64 {
		return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e9
	}
	res.LoadCPUSeconds = cpu(ru1) - cpu(ru0)
	var lat []float64
	for _, st := range states {
		if d := st.done.Load(); d != 0 {
			lat = append(lat, time.Duration(d-t0.UnixNano()).Seconds())
		}
	}
	res.Converged = len(lat)
	sort.Float64s(lat)
	if len(lat) > 0 {
		pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		res.Min, res.P50, res.P90, res.P99, res.Max = lat[0], pct(.5), pct(.9), pct(.99), lat[len(lat)-1]
	}
	if waitErr != nil {
		res.Errors = append(res.Errors, waitErr.Error())
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// waitAll polls until ok holds for every stream, a stream fails, or the
// timeout passes.
func waitAll(ctx context.Context, timeout time.Duration, clients []*xdsclient.Client, ok func(int) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for i, c := range clients {
			if err := c.Err(); err != nil {
				return fmt.Errorf("stream %d ended: %w", i, err)
			}
			if !ok(i) {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d streams not there after %s", missing, len(clients), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// issue gets a workload certificate for ns/sa from pilot's CA with a
// fresh token of audience istio-ca.
func issue(ctx context.Context, kube kubernetes.Interface, addr string, pool *x509.CertPool, serverName, ns, sa string) (*tls.Certificate, error) {
	exp := int64(3600)
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"istio-ca"}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12})))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tr.Status.Token), 30*time.Second)
	defer cancel()
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(cctx, &pb.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), ValidityDuration: 3600})
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair([]byte(strings.Join(resp.GetCertChain(), "")), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return &pair, err
}
