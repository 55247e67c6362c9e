package validation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// caBundles returns each webhook's caBundle.
func caBundles(ctx context.Context) ([][]byte, error) {
	vwc, err := getVWC(ctx)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, w := range vwc.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out, nil
}

func allHaveCA(ctx context.Context) error {
	bundles, err := caBundles(ctx)
	if err != nil {
		return err
	}
	for i, b := range bundles {
		if !bytes.Equal(b, caPEM) {
			return fmt.Errorf("webhook %d has caBundle %q", i, b)
		}
	}
	return nil
}

// TestKeepCABundle removes the caBundle of one webhook, as an admin or
// a tool might, and checks that istiod's loop writes it again; then
// re-applies the chart's configuration with server-side apply, as the
// operator does on every reconcile, and checks that the apply neither
// conflicts with nor removes the caBundle.
func TestKeepCABundle(t *testing.T) {
	ctx := context.Background()
	eventually(t, "caBundle written at start", func() error { return allHaveCA(ctx) })

	patch := []byte(`[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]`)
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, vwcName, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "caBundle restored after removal", func() error { return allHaveCA(ctx) })

	applied := rendered.DeepCopy()
	applied.SetManagedFields(nil)
	raw, err := json.Marshal(applied.Object)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := json.Unmarshal(raw, &obj.Object); err != nil {
		t.Fatal(err)
	}
	if err := k.Patch(ctx, obj, client.Apply, client.FieldOwner("mizzen-operator"), client.ForceOwnership); err != nil {
		t.Fatalf("server-side apply of the chart's configuration: %v", err)
	}
	if err := allHaveCA(ctx); err != nil {
		t.Errorf("after the operator's apply: %v", err)
	}
}
