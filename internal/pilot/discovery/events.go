package discovery

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// ReasonInvalidConfig is the reason of the Events ReportInvalid records.
const ReasonInvalidConfig = "InvalidConfig"

// apiVersions of the Istio kinds discovery watches.
var apiVersions = map[model.Kind]string{
	model.KindVirtualService:        "networking.istio.io/v1",
	model.KindDestinationRule:       "networking.istio.io/v1",
	model.KindGateway:               "networking.istio.io/v1",
	model.KindServiceEntry:          "networking.istio.io/v1",
	model.KindSidecar:               "networking.istio.io/v1",
	model.KindPeerAuthentication:    "security.istio.io/v1",
	model.KindAuthorizationPolicy:   "security.istio.io/v1",
	model.KindRequestAuthentication: "security.istio.io/v1",
	model.KindTelemetry:             "telemetry.istio.io/v1",
}

// ReportInvalid records a Warning Event with reason InvalidConfig on the
// Istio object. The same reason for the same generation of an object is
// recorded once, however many pushes report it; objects discovery does not
// know (deleted meanwhile) are ignored. Safe for concurrent use.
func (c *Controller) ReportInvalid(kind model.Kind, namespace, name, reason string) {
	store := c.istioStores[kind]
	if store == nil {
		return
	}
	obj, ok, err := store.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	k := string(kind) + "/" + namespace + "/" + name
	seen := strconv.FormatInt(o.GetGeneration(), 10) + "\x00" + reason
	c.repMu.Lock()
	if c.reported[k] == seen {
		c.repMu.Unlock()
		return
	}
	c.reported[k] = seen
	c.repMu.Unlock()
	ref := &corev1.ObjectReference{
		Kind:            string(kind),
		APIVersion:      apiVersions[kind],
		Namespace:       namespace,
		Name:            name,
		UID:             o.GetUID(),
		ResourceVersion: o.GetResourceVersion(),
	}
	c.log.Warn("invalid config", "kind", kind, "namespace", namespace, "name", name, "reason", reason)
	c.recorder.Event(ref, corev1.EventTypeWarning, ReasonInvalidConfig, reason)
}

func (c *Controller) forgetReported(kind model.Kind, namespace, name string) {
	c.repMu.Lock()
	delete(c.reported, string(kind)+"/"+namespace+"/"+name)
	c.repMu.Unlock()
}
