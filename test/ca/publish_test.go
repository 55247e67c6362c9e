package ca

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mizzen-mesh/mizzen/internal/ca"
)

// rootConfigMap returns an error unless namespace ns has the root
// ConfigMap with want.
func rootConfigMap(ns string, want []byte) error {
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), ca.RootConfigMap, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if cm.Data[ca.RootConfigMapKey] != string(want) {
		return fmt.Errorf("ConfigMap %s/%s holds another root", ns, ca.RootConfigMap)
	}
	return nil
}

func TestRootPublished(t *testing.T) {
	ctx := context.Background()
	rootPEM := root.RootPEM()
	// Namespaces that existed before the CA started.
	for _, ns := range []string{"default", "kube-system", meshNamespace} {
		eventually(t, "root in "+ns, func() error { return rootConfigMap(ns, rootPEM) })
	}
	// A namespace created later.
	later := createNamespace(t, "later")
	eventually(t, "root in "+later, func() error { return rootConfigMap(later, rootPEM) })

	// Deleted or edited by someone: put back.
	if err := cs.CoreV1().ConfigMaps(later).Delete(ctx, ca.RootConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "root restored in "+later, func() error { return rootConfigMap(later, rootPEM) })
	cm, err := cs.CoreV1().ConfigMaps(later).Get(ctx, ca.RootConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[ca.RootConfigMapKey] = "tampered"
	if _, err := cs.CoreV1().ConfigMaps(later).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "root repaired in "+later, func() error { return rootConfigMap(later, rootPEM) })

	// The root changes: every namespace gets the new one.
	newPEM, _, err := ca.NewSelfSignedRoot(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	publisher.SetRoot(newPEM)
	defer func() {
		publisher.SetRoot(rootPEM)
		for _, ns := range []string{"default", later} {
			eventually(t, "original root back in "+ns, func() error { return rootConfigMap(ns, rootPEM) })
		}
	}()
	for _, ns := range []string{"default", "kube-system", meshNamespace, later} {
		eventually(t, "new root in "+ns, func() error { return rootConfigMap(ns, newPEM) })
	}
	after := createNamespace(t, "after")
	eventually(t, "new root in "+after, func() error { return rootConfigMap(after, newPEM) })
}

func TestTerminatingNamespaceSkipped(t *testing.T) {
	ctx := context.Background()
	// A finalizer keeps the namespace terminating.
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ending-"},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"mizzen.test/hold"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "root in "+ns.Name, func() error { return rootConfigMap(ns.Name, root.RootPEM()) })
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The namespace controller deletes the ConfigMap; the publisher must
	// not recreate it while the namespace ends.
	eventually(t, "ConfigMap gone from "+ns.Name, func() error {
		_, err := cs.CoreV1().ConfigMaps(ns.Name).Get(ctx, ca.RootConfigMap, metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	if _, err := cs.CoreV1().ConfigMaps(ns.Name).Get(ctx, ca.RootConfigMap, metav1.GetOptions{}); err == nil {
		t.Error("the ConfigMap was recreated in a terminating namespace")
	}
	// Let the namespace go.
	cur, err := cs.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Finalizers = nil
	if _, err := cs.CoreV1().Namespaces().Finalize(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
