package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// maxReviewBytes bounds an AdmissionReview body (the API server's own
// request limit is 3 MiB).
const maxReviewBytes = 8 << 20

// Results of an admission, the "result" label of the injections metric.
const (
	ResultInjected = "injected"
	ResultSkipped  = "skipped"
	ResultDenied   = "denied"
	ResultError    = "error"
)

// Metrics are the injector's Prometheus metrics.
type Metrics struct {
	Injections *prometheus.CounterVec
	Denials    *prometheus.CounterVec
	Latency    prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_injection_requests_total",
			Help: "Pod admissions handled by the sidecar injector, by result (injected, skipped, denied, error).",
		}, []string{"result"}),
		Denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_injection_denials_total",
			Help: "Pod admissions denied by the sidecar injector, by the annotation at fault (\"\" when none).",
		}, []string{"annotation"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sidecar_injection_duration_seconds",
			Help:    "Time to handle one pod admission, from request body to response.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	for _, r := range []string{ResultInjected, ResultSkipped, ResultDenied, ResultError} {
		m.Injections.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Injections, m.Denials, m.Latency)
	}
	return m
}

// Handler serves the mutating webhook. Its configuration can be replaced
// at any time with SetConfig.
type Handler struct {
	cfg     atomic.Pointer[Config]
	metrics *Metrics
}

// NewHandler returns a handler using cfg (may be nil until SetConfig) and
// recording into m (may be nil).
func NewHandler(cfg *Config, m *Metrics) *Handler {
	if m == nil {
		m = NewMetrics(nil)
	}
	h := &Handler{metrics: m}
	if cfg != nil {
		h.cfg.Store(cfg)
	}
	return h
}

// SetConfig replaces the configuration used for the next admissions.
func (h *Handler) SetConfig(cfg *Config) { h.cfg.Store(cfg) }

// Config returns the current configuration (nil before the first).
func (h *Handler) Config() *Config { return h.cfg.Load() }

// ServeHTTP handles one AdmissionReview.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil {
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > maxReviewBytes {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	out, _, err := h.Review(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
	h.metrics.Latency.Observe(time.Since(start).Seconds())
}

// Review turns an AdmissionReview request body into the response body and
// the result, counted in the metrics. An error means the body is not an
// AdmissionReview.
func (h *Handler) Review(body []byte) ([]byte, string, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		h.metrics.Injections.WithLabelValues(ResultError).Inc()
		return nil, "", fmt.Errorf("decoding the AdmissionReview: %w", err)
	}
	if review.Request == nil {
		h.metrics.Injections.WithLabelValues(ResultError).Inc()
		return nil, "", errors.New("the AdmissionReview has no request")
	}
	resp, result := h.admit(review.Request)
	h.metrics.Injections.WithLabelValues(result).Inc()
	resp.UID = review.Request.UID
	review.Response = resp
	review.Request = nil
	out, err := json.Marshal(&review)
	if err != nil {
		return nil, "", err
	}
	return out, result, nil
}

// admit decides on one request; a panic denies the pod rather than
// crashing the injector or letting an unprocessed pod through.
func (h *Handler) admit(req *admissionv1.AdmissionRequest) (resp *admissionv1.AdmissionResponse, result string) {
	defer func() {
		if p := recover(); p != nil {
			klog.ErrorS(fmt.Errorf("%v", p), "panic while injecting", "namespace", req.Namespace, "name", req.Name)
			resp = deny(fmt.Sprintf("sidecar injection failed: internal error: %v", p))
			result = ResultError
		}
	}()
	cfg := h.cfg.Load()
	if cfg == nil {
		return deny("sidecar injector has no configuration yet"), ResultError
	}
	if req.Kind.Kind != "" && req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{Allowed: true}, ResultSkipped
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny("decoding the pod: " + err.Error()), ResultError
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	if reason := Skip(&pod, cfg); reason != "" {
		klog.V(2).InfoS("not injecting", "pod", podRef(&pod, req), "reason", reason)
		return &admissionv1.AdmissionResponse{Allowed: true}, ResultSkipped
	}
	injected, err := Inject(&pod, cfg)
	if err != nil {
		var ae *AnnotationError
		if errors.As(err, &ae) {
			h.metrics.Denials.WithLabelValues(ae.Annotation).Inc()
		} else {
			h.metrics.Denials.WithLabelValues("").Inc()
		}
		klog.InfoS("denying pod", "pod", podRef(&pod, req), "err", err)
		return deny("sidecar injection: " + err.Error()), ResultDenied
	}
	patch, err := Patch(&pod, injected)
	if err != nil {
		return deny("sidecar injection: building the patch: " + err.Error()), ResultError
	}
	resp = &admissionv1.AdmissionResponse{Allowed: true}
	if len(patch) > 0 {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch = patch
		resp.PatchType = &pt
	}
	klog.V(2).InfoS("injected", "pod", podRef(&pod, req))
	return resp, ResultInjected
}

func podRef(pod *corev1.Pod, req *admissionv1.AdmissionRequest) string {
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	return req.Namespace + "/" + name
}

func deny(msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest,
	}}
}

// Patch returns the JSON patch (RFC 6902) turning from into to, nil when
// they are equal, for a to made by Inject from from. Containers that to
// adds (the sidecar's) become single "add" operations at their index rather
// than a diff that shifts every later container, and only the fields
// injection touches are compared, so a pod's size (thousands of variables,
// long argument lists) costs nothing beyond decoding it.
func Patch(from, to *corev1.Pod) ([]byte, error) {
	newInit := added(from.Spec.InitContainers, to.Spec.InitContainers)
	newApp := added(from.Spec.Containers, to.Spec.Containers)
	a, err := json.Marshal(touched(from, from.Spec.Containers))
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(touched(to, without(to.Spec.Containers, newApp)))
	if err != nil {
		return nil, err
	}
	ops, err := jsonpatch.CreatePatch(a, b)
	if err != nil {
		return nil, err
	}
	ops = appendAdds(ops, "/spec/initContainers", len(from.Spec.InitContainers), to.Spec.InitContainers, newInit)
	ops = appendAdds(ops, "/spec/containers", len(from.Spec.Containers), to.Spec.Containers, newApp)
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}

// touchedPod holds the fields of a pod that injection changes in place,
// under their names in the Pod's JSON, so that a diff of two touchedPods
// has the paths of the real pods. Inject must change nothing else (but
// add containers); TestPatchMinimalAndExact checks the patch gives the
// injected pod.
type touchedPod struct {
	Metadata struct {
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
	Spec struct {
		Volumes            []corev1.Volume               `json:"volumes,omitempty"`
		Containers         []touchedContainer            `json:"containers"`
		ServiceAccountName string                        `json:"serviceAccountName,omitempty"`
		ImagePullSecrets   []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	} `json:"spec"`
}

type touchedContainer struct {
	LivenessProbe  *corev1.Probe `json:"livenessProbe,omitempty"`
	ReadinessProbe *corev1.Probe `json:"readinessProbe,omitempty"`
	StartupProbe   *corev1.Probe `json:"startupProbe,omitempty"`
}

func touched(pod *corev1.Pod, containers []corev1.Container) *touchedPod {
	t := &touchedPod{}
	t.Metadata.Labels = pod.Labels
	t.Metadata.Annotations = pod.Annotations
	t.Spec.Volumes = pod.Spec.Volumes
	t.Spec.ServiceAccountName = pod.Spec.ServiceAccountName
	t.Spec.ImagePullSecrets = pod.Spec.ImagePullSecrets
	t.Spec.Containers = make([]touchedContainer, len(containers))
	for i, c := range containers {
		t.Spec.Containers[i] = touchedContainer{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe}
	}
	return t
}

// added returns the indexes in to of containers whose names are not in from.
func added(from, to []corev1.Container) []int {
	have := make(map[string]bool, len(from))
	for _, c := range from {
		have[c.Name] = true
	}
	var idx []int
	for i, c := range to {
		if !have[c.Name] {
			idx = append(idx, i)
		}
	}
	return idx
}

func without(list []corev1.Container, idx []int) []corev1.Container {
	if len(idx) == 0 {
		return list
	}
	out := make([]corev1.Container, 0, len(list)-len(idx))
	skip := make(map[int]bool, len(idx))
	for _, i := range idx {
		skip[i] = true
	}
	for i, c := range list {
		if !skip[i] {
			out = append(out, c)
		}
	}
	return out
}

// appendAdds adds the containers at idx (ascending) of the final list to a
// list that has n elements after ops; with n == 0 the list is set whole.
func appendAdds(ops []jsonpatch.Operation, path string, n int, final []corev1.Container, idx []int) []jsonpatch.Operation {
	if len(idx) == 0 {
		return ops
	}
	if n == 0 {
		return append(ops, jsonpatch.NewOperation("add", path, final))
	}
	for _, i := range idx {
		ops = append(ops, jsonpatch.NewOperation("add", fmt.Sprintf("%s/%d", path, i), final[i]))
	}
	return ops
}
