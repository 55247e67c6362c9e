package ca

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// The ConfigMap that carries the mesh root in every namespace.
const (
	RootConfigMap    = "istio-ca-root-cert"
	RootConfigMapKey = "root-cert.pem"
)

// RootPublisher writes ConfigMap istio-ca-root-cert (key root-cert.pem)
// into every namespace that is not terminating, including namespaces
// created later, and rewrites it when the root changes (SetRoot) or when
// someone edits or deletes it.
type RootPublisher struct {
	client kubernetes.Interface
	log    *slog.Logger
	resync time.Duration

	mu   sync.Mutex
	root []byte

	queue   workqueue.TypedRateLimitingInterface[string]
	nsStore cache.Store
}

// NewRootPublisher returns a publisher of rootPEM. resync (0: 10 minutes)
// is how often every namespace is checked again.
func NewRootPublisher(client kubernetes.Interface, rootPEM []byte, resync time.Duration, log *slog.Logger) *RootPublisher {
	if log == nil {
		log = slog.Default()
	}
	if resync <= 0 {
		resync = 10 * time.Minute
	}
	return &RootPublisher{client: client, log: log, resync: resync, root: bytes.Clone(rootPEM),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "mizzen-ca-root-publisher"})}
}

// SetRoot publishes a new root to every namespace.
func (p *RootPublisher) SetRoot(rootPEM []byte) {
	p.mu.Lock()
	changed := !bytes.Equal(p.root, rootPEM)
	p.root = bytes.Clone(rootPEM)
	store := p.nsStore
	p.mu.Unlock()
	if !changed || store == nil {
		return
	}
	for _, k := range store.ListKeys() {
		p.queue.Add(k)
	}
}

func (p *RootPublisher) currentRoot() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.root
}

// Run publishes until ctx ends.
func (p *RootPublisher) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	nsFactory := informers.NewSharedInformerFactory(p.client, p.resync)
	nsInf := nsFactory.Core().V1().Namespaces().Informer()
	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			p.queue.Add(ns.Name)
		}
	}
	if _, err := nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNS,
		UpdateFunc: func(_, obj any) { enqueueNS(obj) },
	}); err != nil {
		return err
	}
	// Only our ConfigMaps are watched, to notice edits and deletions.
	cmFactory := informers.NewSharedInformerFactoryWithOptions(p.client, p.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + RootConfigMap
		}))
	cmInf := cmFactory.Core().V1().ConfigMaps().Informer()
	enqueueCM := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			p.queue.Add(cm.Namespace)
		}
	}
	if _, err := cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { enqueueCM(obj) },
		DeleteFunc: enqueueCM,
	}); err != nil {
		return err
	}
	p.mu.Lock()
	p.nsStore = nsInf.GetStore()
	p.mu.Unlock()
	nsFactory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	defer nsFactory.Shutdown()
	defer cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced, cmInf.HasSynced) {
		return ctx.Err()
	}
	cmLister := cmFactory.Core().V1().ConfigMaps().Lister()
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	for {
		name, quit := p.queue.Get()
		if quit {
			return nil
		}
		err := p.sync(ctx, name, func(ns string) (*corev1.ConfigMap, error) {
			return cmLister.ConfigMaps(ns).Get(RootConfigMap)
		})
		if err != nil && ctx.Err() == nil {
			p.log.Error("publishing the mesh root", "namespace", name, "err", err)
			p.queue.AddRateLimited(name)
		} else {
			p.queue.Forget(name)
		}
		p.queue.Done(name)
	}
}

// sync makes the root ConfigMap of one namespace current.
func (p *RootPublisher) sync(ctx context.Context, name string, cached func(string) (*corev1.ConfigMap, error)) error {
	p.mu.Lock()
	obj, exists, err := p.nsStore.GetByKey(name)
	p.mu.Unlock()
	if err != nil || !exists {
		return err
	}
	ns := obj.(*corev1.Namespace)
	if ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	root := string(p.currentRoot())
	cms := p.client.CoreV1().ConfigMaps(name)
	cur, err := cached(name)
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootConfigMap, Namespace: name,
				Labels: map[string]string{"istio.io/config": "true", "app.kubernetes.io/managed-by": "mizzen"}},
			Data: map[string]string{RootConfigMapKey: root},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("ConfigMap %s/%s appeared meanwhile; retrying", name, RootConfigMap)
		}
		if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
			// The namespace is going away.
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	if cur.Data[RootConfigMapKey] == root {
		return nil
	}
	upd := cur.DeepCopy()
	if upd.Data == nil {
		upd.Data = map[string]string{}
	}
	upd.Data[RootConfigMapKey] = root
	_, err = cms.Update(ctx, upd, metav1.UpdateOptions{})
	return err
}
