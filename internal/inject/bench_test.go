package inject

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkInjection measures one admission through the whole path the API
// server exercises: AdmissionReview JSON decode, selection, injection, JSON
// patch and response encode. Besides ns/op it reports the p50 and p99 of
// the per-iteration latencies.
func BenchmarkInjection(b *testing.B) {
	cfg := chartConfig(b, "profile: minimal")
	cases := []struct {
		name string
		pod  func() *corev1.Pod
	}{
		{"ordinary", func() *corev1.Pod {
			p := &corev1.Pod{}
			mustYAML(b, appPod, p)
			return p
		}},
		{"env-1500", func() *corev1.Pod {
			p := &corev1.Pod{}
			mustYAML(b, appPod, p)
			for i := 0; i < 1500; i++ {
				p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env,
					corev1.EnvVar{Name: fmt.Sprintf("SETTING_%04d", i), Value: fmt.Sprintf("value-%d", i)})
			}
			return p
		}},
		{"spec-64KB", func() *corev1.Pod {
			p := &corev1.Pod{}
			mustYAML(b, appPod, p)
			base := p.Spec.Containers[0]
			// Ten containers with long argument lists and probes, and a
			// large annotation: about 64 KB of pod JSON.
			for i := 1; i < 10; i++ {
				c := *base.DeepCopy()
				c.Name = fmt.Sprintf("worker-%d", i)
				c.Ports = []corev1.ContainerPort{{Name: fmt.Sprintf("http-%d", i), ContainerPort: int32(9080 + i)}}
				c.LivenessProbe.HTTPGet.Port.StrVal = c.Ports[0].Name
				for j := 0; j < 130; j++ {
					c.Args = append(c.Args, fmt.Sprintf("--option-%03d=%s", j, strings.Repeat("x", 24)))
				}
				p.Spec.Containers = append(p.Spec.Containers, c)
			}
			p.Annotations = map[string]string{"example.com/blob": strings.Repeat("y", 16<<10)}
			return p
		}},
	}
	for _, tc := range cases {
		pod := tc.pod()
		if raw, _ := json.Marshal(pod); tc.name == "spec-64KB" && len(raw) < 64<<10 {
			b.Fatalf("the large pod is only %d bytes", len(raw))
		}
		body := reviewFor(b, pod)
		b.Run(tc.name, func(b *testing.B) {
			h := NewHandler(cfg, nil)
			if _, result, err := h.Review(body); err != nil || result != ResultInjected {
				b.Fatalf("result %s, err %v", result, err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, _, err := h.Review(body); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			pct := func(p float64) float64 {
				return float64(times[int(p*float64(len(times)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(len(body))/1024, "review-KB")
		})
	}
}
