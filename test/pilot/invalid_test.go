package pilot

import (
	"context"
	"fmt"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/pilot/server/xdsclient"
)

// TestInvalidConfigReported: an Istio object the translation has to skip
// for a connected proxy gets a Warning Event InvalidConfig that says why.
func TestInvalidConfigReported(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "invalid-")
	webService(t, ns)
	mustDial(t, workloadTLS(t, addrs.GRPC, ns, "client"), xdsclient.Options{Node: node("sidecar", "10.20.0.11", "client-1", ns, "client", nil, nil)})
	if _, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, &clientnetworking.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "delegating"},
		Spec: networking.VirtualService{Hosts: []string{"web"}, Http: []*networking.HTTPRoute{{
			Delegate: &networking.Delegate{Name: "elsewhere", Namespace: ns}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an InvalidConfig event", func() error {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "InvalidConfig" && e.InvolvedObject.Name == "delegating" && strings.Contains(e.Message, "delegate") {
				return nil
			}
		}
		return fmt.Errorf("no InvalidConfig event among %d events", len(evs.Items))
	})
}
