package injector

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mizzen-mesh/mizzen/internal/inject"
)

var nsCounter atomic.Int32

// namespace creates a fresh namespace with labels, deleted after the test.
func namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   fmt.Sprintf("%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), nsCounter.Add(1)),
		Labels: labels,
	}}
	if len(ns.Name) > 63 {
		ns.Name = ns.Name[len(ns.Name)-63:]
		ns.Name = strings.TrimLeft(ns.Name, "-")
	}
	if err := k.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Delete(context.Background(), ns) })
	return ns.Name
}

var injectionEnabled = map[string]string{"istio-injection": "enabled"}

// appPod is an ordinary application pod, as a Deployment would create it.
func appPod(ns string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "productpage-",
			Namespace:    ns,
			Labels:       map[string]string{"app": "productpage", "version": "v1"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "productpage",
				Image: "docker.io/istio/examples-bookinfo-productpage-v1:1.20.1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9080}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/health", Port: intstr.FromString("http"),
				}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/ready", Port: intstr.FromInt32(9080),
				}}},
			}},
		},
	}
}

// create creates the pod and returns what the API server stored.
func create(t *testing.T, pod *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	err := k.Create(context.Background(), pod)
	return pod, err
}

func mustCreate(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := create(t, pod)
	if err != nil {
		t.Fatalf("creating a pod in %s: %v", pod.Namespace, err)
	}
	return p
}

func container(list []corev1.Container, name string) *corev1.Container {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// proxyOf returns the proxy container and whether it is a native sidecar.
func proxyOf(pod *corev1.Pod) (*corev1.Container, bool) {
	if c := container(pod.Spec.InitContainers, inject.ProxyContainerName); c != nil {
		return c, true
	}
	return container(pod.Spec.Containers, inject.ProxyContainerName), false
}

func assertInjected(t *testing.T, pod *corev1.Pod, revision string) {
	t.Helper()
	proxy, _ := proxyOf(pod)
	if proxy == nil || container(pod.Spec.InitContainers, inject.InitContainerName) == nil {
		t.Fatalf("pod %s/%s was not injected: init containers %v, containers %v",
			pod.Namespace, pod.Name, names(pod.Spec.InitContainers), names(pod.Spec.Containers))
	}
	if pod.Labels["istio.io/rev"] != revision {
		t.Errorf("istio.io/rev=%q, want %q", pod.Labels["istio.io/rev"], revision)
	}
	var st inject.Status
	if err := json.Unmarshal([]byte(pod.Annotations[inject.AnnotationStatus]), &st); err != nil || st.Revision != revision {
		t.Errorf("sidecar.istio.io/status %q (%v), want revision %s", pod.Annotations[inject.AnnotationStatus], err, revision)
	}
}

func assertNotInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if p, _ := proxyOf(pod); p != nil || len(pod.Spec.InitContainers) != 0 || pod.Annotations[inject.AnnotationStatus] != "" {
		t.Fatalf("pod %s/%s was injected: init containers %v, containers %v",
			pod.Namespace, pod.Name, names(pod.Spec.InitContainers), names(pod.Spec.Containers))
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func keyOf(name string) client.ObjectKey { return client.ObjectKey{Name: name} }

func pemDecode(data []byte) ([]byte, []byte) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, rest
	}
	return b.Bytes, rest
}
