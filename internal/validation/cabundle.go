package validation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// FieldManager is the server-side field manager of the caBundle patches.
const FieldManager = "mizzen-pilot"

const (
	caBundleResync = 5 * time.Minute
	caBundleRetry  = time.Second
)

// KeepCABundle writes caPEM into the caBundle of every webhook of the
// ValidatingWebhookConfiguration named webhookConfigName, and writes it again
// whenever the configuration is created, replaced or edited so that a
// webhook lacks it, until ctx ends (then it returns nil). The operator's
// server-side apply does not own caBundle (the chart never sets it), so the
// two never undo each other. The configuration may not exist yet; the
// caBundle is written once it does.
func KeepCABundle(ctx context.Context, cs kubernetes.Interface, webhookConfigName string, caPEM []byte, log *slog.Logger) error {
	if len(caPEM) == 0 {
		return fmt.Errorf("keeping the caBundle of %s: no CA certificate", webhookConfigName)
	}
	log = log.With("validatingwebhookconfiguration", webhookConfigName)
	factory := informers.NewSharedInformerFactoryWithOptions(cs, caBundleResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", webhookConfigName).String()
		}))
	informer := factory.Admissionregistration().V1().ValidatingWebhookConfigurations().Informer()
	changed := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		obj, exists, err := informer.GetStore().GetByKey(webhookConfigName)
		if err != nil || !exists {
			continue
		}
		vwc := obj.(*admissionregistrationv1.ValidatingWebhookConfiguration)
		n, err := patchCABundle(ctx, cs, vwc, caPEM)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("writing the caBundle; will retry", "err", err)
			time.AfterFunc(caBundleRetry, func() { notify(nil) })
		case n > 0:
			log.Info("wrote the caBundle", "webhooks", n)
		}
	}
}

// patchCABundle sets caPEM on each webhook of vwc whose caBundle differs,
// with one JSON patch that fails (and is retried) if the webhooks moved
// since vwc was read. It returns how many webhooks it wrote.
func patchCABundle(ctx context.Context, cs kubernetes.Interface, vwc *admissionregistrationv1.ValidatingWebhookConfiguration, caPEM []byte) (int, error) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	for i, wh := range vwc.Webhooks {
		if bytes.Equal(wh.ClientConfig.CABundle, caPEM) {
			continue
		}
		ops = append(ops,
			op{"test", fmt.Sprintf("/webhooks/%d/name", i), wh.Name},
			op{"add", fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), caPEM})
	}
	if len(ops) == 0 {
		return 0, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return 0, err
	}
	_, err = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, vwc.Name, types.JSONPatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	return len(ops) / 2, err
}

// WebhookConfigName is the name the control plane chart gives the
// ValidatingWebhookConfiguration of a revision ("" or "default" for the
// default one) installed in namespace: istio-validator{-rev}-<namespace>.
func WebhookConfigName(revision, namespace string) string {
	if revision == "" || revision == "default" {
		return "istio-validator-" + namespace
	}
	return "istio-validator-" + revision + "-" + namespace
}
