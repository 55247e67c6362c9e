package discovery

import (
	"context"
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/mizzen-mesh/mizzen/internal/pilot/discovery"
	"github.com/mizzen-mesh/mizzen/internal/pilot/model"
)

// An object translation rejects gets a Warning Event users see with
// kubectl describe; reporting the same reason on every push records it once.
func TestInvalidConfigEvents(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "events")
	vs, err := ist.NetworkingV1().VirtualServices(ns).Create(ctx, &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns},
		Spec:       networking.VirtualService{Hosts: []string{"reviews"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the virtual service in the snapshot", func() error {
		if len(names(ctrl.Snapshot().VirtualServices, ns)) != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	const first, second = "http route 0: no destination", "host reviews: no such service"
	for range 5 { // five pushes
		ctrl.ReportInvalid(model.KindVirtualService, ns, "reviews", first)
	}
	ctrl.ReportInvalid(model.KindVirtualService, ns, "reviews", second)

	// Events are recorded in order: once the second is there, the first
	// has its final count.
	var events []corev1.Event
	eventually(t, "both events", func() error {
		list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", "reviews").String()})
		if err != nil {
			return err
		}
		events = list.Items
		for _, e := range events {
			if e.Message == second {
				return nil
			}
		}
		return fmt.Errorf("%d events", len(events))
	})
	if len(events) != 2 {
		t.Fatalf("%d events, want 2: %v", len(events), events)
	}
	for _, e := range events {
		if e.Type != corev1.EventTypeWarning || e.Reason != discovery.ReasonInvalidConfig || e.Count != 1 ||
			e.InvolvedObject.Kind != "VirtualService" || e.InvolvedObject.APIVersion != "networking.istio.io/v1" ||
			e.InvolvedObject.UID != vs.UID {
			t.Errorf("event %s %s %q count %d on %+v", e.Type, e.Reason, e.Message, e.Count, e.InvolvedObject)
		}
	}
}
