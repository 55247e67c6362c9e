package discovery

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// watch registers handlers on an informer: upsert for adds and updates,
// remove for deletes (with the last known object).
func (c *Controller) watch(inf cache.SharedIndexInformer, transform cache.TransformFunc, upsert func(obj any), remove func(obj any)) error {
	if transform != nil {
		if err := inf.SetTransform(transform); err != nil {
			return err
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    upsert,
		UpdateFunc: func(_, obj any) { upsert(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			remove(obj)
		},
	})
	if err != nil {
		return err
	}
	c.synced = append(c.synced, reg.HasSynced)
	return nil
}

func key(o metav1.Object) string { return o.GetNamespace() + "/" + o.GetName() }

func (c *Controller) registerKube() error {
	f := c.kubeFactory
	if err := c.watch(f.Core().V1().Services().Informer(), stripMeta, func(obj any) {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			return
		}
		c.update(func(ix *index) { ix.setService(key(svc), svc) })
		c.notify(Change{Kind: KindService, Namespace: svc.Namespace, Name: svc.Name})
	}, func(obj any) {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			return
		}
		c.update(func(ix *index) { ix.setService(key(svc), nil) })
		c.notify(Change{Kind: KindService, Namespace: svc.Namespace, Name: svc.Name})
	}); err != nil {
		return err
	}

	onSlice := func(obj any, deleted bool) {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		var si *sliceInfo
		if !deleted {
			si = newSliceInfo(es)
		}
		var svc string
		c.update(func(ix *index) { svc = ix.setSlice(key(es), si) })
		ch := Change{Kind: KindEndpointSlice, Namespace: es.Namespace, Name: es.Name, EndpointsOnly: true}
		if svc == "" && si != nil {
			svc = si.Service
		}
		if svc != "" {
			ch.Hostnames = []string{c.serviceHostname(svc)}
		}
		c.notify(ch)
	}
	if err := c.watch(f.Discovery().V1().EndpointSlices().Informer(), stripMeta,
		func(obj any) { onSlice(obj, false) }, func(obj any) { onSlice(obj, true) }); err != nil {
		return err
	}

	onPod := func(obj any, deleted bool) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		var p *podInfo
		if !deleted {
			p = newPodInfo(pod)
		}
		var changed bool
		var hosts []string
		c.update(func(ix *index) { changed, hosts = ix.setPod(key(pod), p) })
		if !changed {
			return
		}
		c.notify(Change{Kind: KindPod, Namespace: pod.Namespace, Name: pod.Name, EndpointsOnly: true, Hostnames: hosts})
	}
	if err := c.watch(f.Core().V1().Pods().Informer(), func(obj any) (any, error) {
		if pod, ok := obj.(*corev1.Pod); ok {
			return stripPod(pod), nil
		}
		return obj, nil
	}, func(obj any) { onPod(obj, false) }, func(obj any) { onPod(obj, true) }); err != nil {
		return err
	}

	onNamespace := func(obj any, deleted bool) {
		ns, ok := obj.(*corev1.Namespace)
		if !ok {
			return
		}
		c.update(func(ix *index) {
			ix.dirtyNamespaces = true
			if deleted {
				delete(ix.namespaces, ns.Name)
			} else {
				ix.namespaces[ns.Name] = ns.Labels
			}
		})
		c.notify(Change{Kind: KindNamespace, Name: ns.Name})
	}
	if err := c.watch(f.Core().V1().Namespaces().Informer(), func(obj any) (any, error) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			out := &corev1.Namespace{}
			out.Name, out.UID, out.ResourceVersion, out.Labels = ns.Name, ns.UID, ns.ResourceVersion, ns.Labels
			return out, nil
		}
		return obj, nil
	}, func(obj any) { onNamespace(obj, false) }, func(obj any) { onNamespace(obj, true) }); err != nil {
		return err
	}

	onSecret := func(obj any, deleted bool) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		var relevant bool
		c.update(func(ix *index) {
			if deleted {
				delete(ix.secrets, key(s))
			} else {
				ix.secrets[key(s)] = s
			}
			relevant = ix.credentialSecret(s.Name)
			if relevant {
				ix.dirtySecrets = true
			}
		})
		if relevant {
			c.notify(Change{Kind: KindSecret, Namespace: s.Namespace, Name: s.Name})
		}
	}
	return c.watch(f.Core().V1().Secrets().Informer(), func(obj any) (any, error) {
		if s, ok := obj.(*corev1.Secret); ok {
			return stripSecret(s), nil
		}
		return obj, nil
	}, func(obj any) { onSecret(obj, false) }, func(obj any) { onSecret(obj, true) })
}

// serviceHostname maps a Service "ns/name" to its hostname.
func (c *Controller) serviceHostname(nsName string) string {
	for i := 0; i < len(nsName); i++ {
		if nsName[i] == '/' {
			return Hostname(nsName[i+1:], nsName[:i], c.opts.DomainSuffix)
		}
	}
	return nsName
}

// stripMeta drops managedFields and kubectl's last-applied annotation,
// the bulk of most objects, before they are cached.
func stripMeta(obj any) (any, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d, nil
	}
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a != nil {
			if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
				b := make(map[string]string, len(a)-1)
				for k, v := range a {
					if k != corev1.LastAppliedConfigAnnotation {
						b[k] = v
					}
				}
				m.SetAnnotations(b)
			}
		}
	}
	return obj, nil
}

func meta(kind model.Kind, o metav1.Object) model.Meta {
	return model.Meta{
		Kind:              kind,
		Name:              o.GetName(),
		Namespace:         o.GetNamespace(),
		Generation:        o.GetGeneration(),
		ResourceVersion:   o.GetResourceVersion(),
		Labels:            o.GetLabels(),
		Annotations:       o.GetAnnotations(),
		CreationTimestamp: o.GetCreationTimestamp().Time,
	}
}

// LabelRevision binds an Istio object to one control plane revision.
const LabelRevision = "istio.io/rev"

// inRevision reports whether an Istio object belongs to the control plane
// revision rev: objects without the istio.io/rev label belong to every
// revision; "default" and "" name the default revision.
func inRevision(labels map[string]string, rev string) bool {
	r, ok := labels[LabelRevision]
	if !ok {
		return true
	}
	norm := func(s string) string {
		if s == "" {
			return "default"
		}
		return s
	}
	return norm(r) == norm(rev)
}

// watchIstio registers an Istio kind; conv turns an object into its
// model.Config.
func watchIstio[O metav1.Object](c *Controller, kind model.Kind, inf cache.SharedIndexInformer, conv func(O) any) error {
	c.istioStores[kind] = inf.GetStore()
	on := func(obj any, deleted bool) {
		o, ok := obj.(O)
		if !ok {
			return
		}
		// Objects of another control plane revision are not ours: one
		// relabelled away is deleted from our view.
		if !deleted && !inRevision(o.GetLabels(), c.opts.Revision) {
			deleted = true
		}
		c.update(func(ix *index) {
			if deleted {
				ix.setConfig(kind, key(o), nil)
			} else {
				ix.setConfig(kind, key(o), conv(o))
			}
		})
		if deleted {
			c.forgetReported(kind, o.GetNamespace(), o.GetName())
		}
		c.notify(Change{Kind: string(kind), Namespace: o.GetNamespace(), Name: o.GetName()})
	}
	if err := c.watch(inf, stripMeta, func(obj any) { on(obj, false) }, func(obj any) { on(obj, true) }); err != nil {
		return fmt.Errorf("watching %s: %w", kind, err)
	}
	return nil
}

func (c *Controller) registerIstio() error {
	nw := c.istFactory.Networking().V1()
	sec := c.istFactory.Security().V1()
	tel := c.istFactory.Telemetry().V1()
	errs := []error{
		watchIstio(c, model.KindVirtualService, nw.VirtualServices().Informer(), func(o *networkingv1.VirtualService) any {
			return model.Config[*networking.VirtualService]{Meta: meta(model.KindVirtualService, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindDestinationRule, nw.DestinationRules().Informer(), func(o *networkingv1.DestinationRule) any {
			return model.Config[*networking.DestinationRule]{Meta: meta(model.KindDestinationRule, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindGateway, nw.Gateways().Informer(), func(o *networkingv1.Gateway) any {
			return model.Config[*networking.Gateway]{Meta: meta(model.KindGateway, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindServiceEntry, nw.ServiceEntries().Informer(), func(o *networkingv1.ServiceEntry) any {
			return model.Config[*networking.ServiceEntry]{Meta: meta(model.KindServiceEntry, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindSidecar, nw.Sidecars().Informer(), func(o *networkingv1.Sidecar) any {
			return model.Config[*networking.Sidecar]{Meta: meta(model.KindSidecar, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindPeerAuthentication, sec.PeerAuthentications().Informer(), func(o *securityv1.PeerAuthentication) any {
			return model.Config[*security.PeerAuthentication]{Meta: meta(model.KindPeerAuthentication, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindAuthorizationPolicy, sec.AuthorizationPolicies().Informer(), func(o *securityv1.AuthorizationPolicy) any {
			return model.Config[*security.AuthorizationPolicy]{Meta: meta(model.KindAuthorizationPolicy, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindRequestAuthentication, sec.RequestAuthentications().Informer(), func(o *securityv1.RequestAuthentication) any {
			return model.Config[*security.RequestAuthentication]{Meta: meta(model.KindRequestAuthentication, o), Spec: &o.Spec}
		}),
		watchIstio(c, model.KindTelemetry, tel.Telemetries().Informer(), func(o *telemetryv1.Telemetry) any {
			return model.Config[*telemetry.Telemetry]{Meta: meta(model.KindTelemetry, o), Spec: &o.Spec}
		}),
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
