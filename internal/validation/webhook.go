package validation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Reasons of galley_validation_failed.
const (
	ReasonInvalidConfig = "invalid_resource"
	ReasonDecodeError   = "decode_error"
)

// maxReviewBytes bounds an AdmissionReview body; the API server limits
// objects to about 3 MiB.
const maxReviewBytes = 6 << 20

// metrics are the webhook's counters, named as Istio's so that existing
// dashboards and alerts keep working.
type metrics struct {
	passed    *prometheus.CounterVec
	failed    *prometheus.CounterVec
	httpError *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		passed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "galley_validation_passed",
			Help: "Istio configuration objects that passed validation.",
		}, []string{"group", "version", "resource"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "galley_validation_failed",
			Help: "Istio configuration objects that failed validation.",
		}, []string{"group", "version", "resource", "reason"}),
		httpError: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "galley_validation_http_error",
			Help: "Validation requests refused before reading an AdmissionReview.",
		}, []string{"status"}),
	}
	for _, c := range []prometheus.Collector{m.passed, m.failed, m.httpError} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering validation metrics: %w", err)
		}
	}
	return m, nil
}

// NewHandler returns the validating admission webhook: it serves
// admission.k8s.io/v1 AdmissionReviews POSTed to whatever path it is
// mounted on, validates objects being created or updated with Validate, and
// allows everything else (deletes, kinds it does not know). Deprecated
// fields are reported as admission warnings, which kubectl prints. Its counters
// are registered on reg.
func NewHandler(log *slog.Logger, reg prometheus.Registerer) (http.Handler, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &handler{log: log, metrics: m}, nil
}

type handler struct {
	log     *slog.Logger
	metrics *metrics
}

func (h *handler) httpError(w http.ResponseWriter, code int, msg string) {
	h.metrics.httpError.WithLabelValues(strconv.Itoa(code)).Inc()
	http.Error(w, msg, code)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.httpError(w, http.StatusMethodNotAllowed, "method must be POST")
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		h.httpError(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		h.httpError(w, http.StatusRequestEntityTooLarge, "reading the request: "+err.Error())
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		h.httpError(w, http.StatusBadRequest, "decoding the AdmissionReview: "+err.Error())
		return
	}
	if review.Request == nil {
		h.httpError(w, http.StatusBadRequest, "the AdmissionReview has no request")
		return
	}
	resp := h.review(review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		h.log.Warn("writing the admission response", "err", err)
	}
}

func (h *handler) review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allow
	}
	gvk := schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	res := req.Resource
	log := h.log.With("kind", gvk.String(), "namespace", req.Namespace, "name", req.Name, "operation", req.Operation)
	if !Supported(gvk) {
		// The webhook's rules only send the kinds above; anything else is
		// not ours to refuse.
		log.Warn("allowing a kind this webhook does not validate")
		return allow
	}
	warnings, err := validateJSON(gvk, req.Object.Raw)
	if err == nil {
		h.metrics.passed.WithLabelValues(res.Group, res.Version, res.Resource).Inc()
		allow.Warnings = warnings
		return allow
	}
	reason := ReasonInvalidConfig
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field == "<object>" {
		reason = ReasonDecodeError
	}
	h.metrics.failed.WithLabelValues(res.Group, res.Version, res.Resource, reason).Inc()
	msg := denialMessage(err)
	log.Info("refusing invalid configuration", "reason", msg)
	return &admissionv1.AdmissionResponse{
		Allowed:  false,
		Warnings: warnings,
		Result: &metav1.Status{
			Status:  metav1.StatusFailure,
			Code:    http.StatusUnprocessableEntity,
			Reason:  metav1.StatusReasonInvalid,
			Message: msg,
		},
	}
}

// denialMessage is the one line the API server shows the user after
// `admission webhook "..." denied the request: `.
func denialMessage(err error) string {
	fes := FieldErrors(err)
	if len(fes) == 0 {
		return "configuration is invalid: " + err.Error()
	}
	parts := make([]string, len(fes))
	for i, fe := range fes {
		parts[i] = fe.Error()
	}
	return "configuration is invalid: " + strings.Join(parts, "; ")
}
