// Package discovery is the control plane's watcher: informers on the
// Kubernetes and Istio objects the mesh reads, incremental indexes updated by
// their event handlers, and immutable model.PushContext snapshots built from
// those indexes on demand (only the parts that changed are rebuilt).
//
// Subscribers learn about every change through Change values delivered on
// their own goroutine from a bounded queue, so a slow subscriber never blocks
// the informers; when a queue overflows it collapses into one KindFull change.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// Change kinds besides the model.Kind values.
const (
	KindService       = "Service"
	KindEndpointSlice = "EndpointSlice"
	KindPod           = "Pod"
	KindNamespace     = "Namespace"
	KindSecret        = "Secret"
	KindMeshConfig    = "MeshConfig"
	// KindFull says anything may have changed: a subscriber's queue
	// overflowed and its pending changes were collapsed into this one.
	KindFull = "Full"
)

// Change describes one change seen by the informers.
type Change struct {
	// Kind is a model.Kind value or one of the Kind* constants.
	Kind            string
	Namespace, Name string
	// EndpointsOnly is set when only endpoints changed (EndpointSlices,
	// pods backing services): an incremental EDS push is enough.
	EndpointsOnly bool
	// Hostnames are the services whose endpoints changed.
	Hostnames []string
}

// Options configures a Controller.
type Options struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
	// Namespace is the control plane's namespace; the root namespace
	// unless Mesh.RootNamespace says otherwise.
	Namespace string
	// Revision of the control plane: Istio objects labelled istio.io/rev
	// with another revision are ignored ("" is the default revision).
	Revision string
	// DomainSuffix is the cluster domain. Default "cluster.local".
	DomainSuffix string
	// Mesh is the mesh config. Default DefaultMeshConfig().
	Mesh *meshconfig.MeshConfig
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Recorder records the InvalidConfig Events; default: one writing to
	// the Kubernetes Events API through Kube.
	Recorder record.EventRecorder
	// Resync is the informers' resync period (default none).
	Resync time.Duration
}

// queueLimit bounds each subscriber's queue of pending changes.
const queueLimit = 4096

// Controller watches the cluster and builds snapshots.
type Controller struct {
	opts        Options
	log         *slog.Logger
	kubeFactory informers.SharedInformerFactory
	istFactory  istioinformers.SharedInformerFactory
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	synced      []cache.InformerSynced
	istioStores map[model.Kind]cache.Store

	mu    sync.Mutex
	idx   *index
	ver   uint64
	snap  *model.PushContext
	dirty bool

	subMu sync.Mutex
	subs  []*subscriber
	done  chan struct{}

	repMu    sync.Mutex
	reported map[string]string
}

// New creates a Controller; nothing is watched before Run.
func New(opts Options) (*Controller, error) {
	if opts.Kube == nil || opts.Istio == nil {
		return nil, errors.New("discovery needs a Kubernetes and an Istio client")
	}
	if opts.Namespace == "" {
		return nil, errors.New("discovery needs the control plane namespace")
	}
	if opts.DomainSuffix == "" {
		opts.DomainSuffix = "cluster.local"
	}
	if opts.Mesh == nil {
		opts.Mesh = DefaultMeshConfig()
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Controller{
		opts:        opts,
		log:         opts.Log,
		idx:         newIndex(opts.DomainSuffix),
		dirty:       true,
		done:        make(chan struct{}),
		reported:    map[string]string{},
		istioStores: map[model.Kind]cache.Store{},
	}
	if err := c.idx.setMesh(withRoot(opts.Mesh, opts.Namespace), opts.Namespace); err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	c.recorder = opts.Recorder
	if c.recorder == nil {
		c.broadcaster = record.NewBroadcaster()
		c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "pilot"})
	}
	c.kubeFactory = informers.NewSharedInformerFactory(opts.Kube, opts.Resync)
	c.istFactory = istioinformers.NewSharedInformerFactory(opts.Istio, opts.Resync)
	if err := c.registerKube(); err != nil {
		return nil, err
	}
	if err := c.registerIstio(); err != nil {
		return nil, err
	}
	return c, nil
}

// Run starts the informers and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if c.broadcaster != nil {
		c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.opts.Kube.CoreV1().Events("")})
		defer c.broadcaster.Shutdown()
	}
	c.kubeFactory.Start(ctx.Done())
	c.istFactory.Start(ctx.Done())
	defer c.istFactory.Shutdown()
	defer c.kubeFactory.Shutdown()
	defer c.stop()
	// Ending before the informers synced is not an error: ctx ended.
	if cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		c.log.Info("discovery synced", "services", c.count())
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) stop() {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	select {
	case <-c.done:
	default:
		close(c.done)
	}
}

func (c *Controller) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idx.services)
}

// HasSynced reports whether every informer listed its objects and their
// handlers ran.
func (c *Controller) HasSynced() bool {
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Snapshot returns the current snapshot, rebuilding the parts that changed
// since the last call. Snapshots are never modified once returned.
func (c *Controller) Snapshot() *model.PushContext {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty && c.snap != nil {
		return c.snap
	}
	c.ver++
	c.snap = c.idx.build(strconv.FormatUint(c.ver, 10), c.opts.Namespace, c.snap)
	c.dirty = false
	return c.snap
}

// SetMesh replaces the mesh config and notifies subscribers. Its
// discoverySelectors limit the namespaces whose services, endpoints,
// Istio objects and credentials the snapshots hold (the root and control
// plane namespaces are always kept).
func (c *Controller) SetMesh(m *meshconfig.MeshConfig) {
	if m == nil {
		m = DefaultMeshConfig()
	}
	m = withRoot(m, c.opts.Namespace)
	var err error
	c.update(func(ix *index) { err = ix.setMesh(m, c.opts.Namespace) })
	if err != nil {
		c.log.Error("invalid discovery selectors match no namespace", "err", err)
	}
	c.notify(Change{Kind: KindMeshConfig})
}

// update changes the indexes under the lock and marks the snapshot stale.
func (c *Controller) update(f func(*index)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c.idx)
	c.dirty = true
}

// Subscribe registers fn to be called for every change, in order, on a
// goroutine of its own (one per subscriber) until Run returns.
func (c *Controller) Subscribe(fn func(Change)) {
	s := &subscriber{fn: fn, wake: make(chan struct{}, 1)}
	c.subMu.Lock()
	c.subs = append(c.subs, s)
	c.subMu.Unlock()
	go s.run(c.done)
}

func (c *Controller) notify(ch Change) {
	c.subMu.Lock()
	subs := c.subs
	c.subMu.Unlock()
	for _, s := range subs {
		s.push(ch)
	}
}

type subscriber struct {
	fn   func(Change)
	mu   sync.Mutex
	q    []Change
	wake chan struct{}
}

func (s *subscriber) push(ch Change) {
	s.mu.Lock()
	switch {
	case len(s.q) == 1 && s.q[0].Kind == KindFull:
		// Already collapsed: the full change covers this one.
	case len(s.q) >= queueLimit:
		s.q = append(s.q[:0], Change{Kind: KindFull})
	default:
		s.q = append(s.q, ch)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			q := s.q
			s.q = nil
			s.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, ch := range q {
				s.fn(ch)
			}
		}
	}
}
