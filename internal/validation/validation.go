// Package validation checks Istio configuration the way the mesh's control
// plane will read it: the spec of each networking.istio.io,
// security.istio.io and telemetry.istio.io object is decoded strictly into
// its istio.io/api message, then held to Istio's semantic rules (valid hosts,
// weights summing to 100, compilable regular expressions, ...). Every
// problem is reported with the path of the field at fault, and all problems
// of an object are returned together.
//
// The same package serves the rules as a validating admission webhook
// (NewHandler) and keeps that webhook's caBundle in place (KeepCABundle).
//
// On a cluster with the Istio CRDs of charts/base, three layers see an
// object in turn: the API server prunes fields the CRD schema does not
// declare (or, with fieldValidation=Strict as kubectl sends, refuses them
// naming the field); the CRD schema and its CEL rules refuse missing
// required fields, bad durations, ports out of range and some percentages;
// then this webhook applies everything else. Validate checks all of it, so
// that objects reaching the control plane another way (CRDs without
// schemas, files, tests) are held to the same rules.
package validation

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// FieldError is one problem, at one field.
type FieldError struct {
	// Field is the path of the field, such as spec.http[0].route[1].weight.
	Field string
	// Message says what is wrong.
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// ErrUnsupportedKind is returned (wrapped) for a group, version and kind
// that the package does not know.
var ErrUnsupportedKind = errors.New("unsupported kind")

// kind is one validated kind: its served versions, its message and its
// semantic rules.
type kind struct {
	resource string
	versions []string
	newSpec  func() proto.Message
	validate func(spec proto.Message, meta objectMeta, e *errorList)
}

// objectMeta is what the rules need from the object's metadata.
type objectMeta struct {
	name, namespace string
}

var kinds = map[schema.GroupKind]kind{
	{Group: "networking.istio.io", Kind: "VirtualService"}:      {"virtualservices", networkingVersions, func() proto.Message { return &networking.VirtualService{} }, validateVirtualService},
	{Group: "networking.istio.io", Kind: "DestinationRule"}:     {"destinationrules", networkingVersions, func() proto.Message { return &networking.DestinationRule{} }, validateDestinationRule},
	{Group: "networking.istio.io", Kind: "Gateway"}:             {"gateways", networkingVersions, func() proto.Message { return &networking.Gateway{} }, validateGateway},
	{Group: "networking.istio.io", Kind: "ServiceEntry"}:        {"serviceentries", networkingVersions, func() proto.Message { return &networking.ServiceEntry{} }, validateServiceEntry},
	{Group: "networking.istio.io", Kind: "Sidecar"}:             {"sidecars", networkingVersions, func() proto.Message { return &networking.Sidecar{} }, validateSidecar},
	{Group: "security.istio.io", Kind: "PeerAuthentication"}:    {"peerauthentications", securityVersions, func() proto.Message { return &security.PeerAuthentication{} }, validatePeerAuthentication},
	{Group: "security.istio.io", Kind: "AuthorizationPolicy"}:   {"authorizationpolicies", securityVersions, func() proto.Message { return &security.AuthorizationPolicy{} }, validateAuthorizationPolicy},
	{Group: "security.istio.io", Kind: "RequestAuthentication"}: {"requestauthentications", securityVersions, func() proto.Message { return &security.RequestAuthentication{} }, validateRequestAuthentication},
	{Group: "telemetry.istio.io", Kind: "Telemetry"}:            {"telemetries", []string{"v1", "v1alpha1"}, func() proto.Message { return &telemetry.Telemetry{} }, validateTelemetry},
}

var (
	networkingVersions = []string{"v1", "v1beta1", "v1alpha3"}
	securityVersions   = []string{"v1", "v1beta1"}
)

// Resource is a validated kind as the API server names it.
type Resource struct {
	GroupVersionKind schema.GroupVersionKind
	// Resource is the plural, lower-case resource name.
	Resource string
}

// Resources lists every group, version and kind that Validate accepts,
// sorted.
func Resources() []Resource {
	var out []Resource
	for gk, k := range kinds {
		for _, v := range k.versions {
			out = append(out, Resource{gk.WithVersion(v), k.resource})
		}
	}
	slices.SortFunc(out, func(a, b Resource) int {
		return strings.Compare(a.GroupVersionKind.String(), b.GroupVersionKind.String())
	})
	return out
}

// Supported reports whether Validate knows gvk.
func Supported(gvk schema.GroupVersionKind) bool {
	k, ok := kinds[gvk.GroupKind()]
	if !ok {
		return false
	}
	for _, v := range k.versions {
		if v == gvk.Version {
			return true
		}
	}
	return false
}

// Validate checks obj, an object of kind gvk. It returns nil for a valid
// object; otherwise an error that joins one *FieldError per problem
// (errors.Join), or an error wrapping ErrUnsupportedKind.
func Validate(gvk schema.GroupVersionKind, obj *unstructured.Unstructured) error {
	_, err := ValidateWithWarnings(gvk, obj)
	return err
}

// ValidateWithWarnings is Validate that also returns warnings about valid
// but discouraged settings (fields the Istio API marks deprecated), each
// naming its field.
func ValidateWithWarnings(gvk schema.GroupVersionKind, obj *unstructured.Unstructured) ([]string, error) {
	if !Supported(gvk) {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKind, gvk)
	}
	k := kinds[gvk.GroupKind()]
	var e errorList
	meta := objectMeta{name: obj.GetName(), namespace: obj.GetNamespace()}
	spec := k.newSpec()
	decodeSpec(field.NewPath("spec"), obj.Object["spec"], spec, &e)
	if e.len() == 0 {
		k.validate(spec, meta, &e)
	}
	return e.warnings, e.err()
}

// ValidateJSON is Validate for an object encoded as JSON.
func ValidateJSON(gvk schema.GroupVersionKind, raw []byte) error {
	_, err := validateJSON(gvk, raw)
	return err
}

func validateJSON(gvk schema.GroupVersionKind, raw []byte) ([]string, error) {
	obj := &unstructured.Unstructured{}
	if err := json.Unmarshal(raw, &obj.Object); err != nil {
		return nil, &FieldError{Field: "<object>", Message: "not a JSON object: " + err.Error()}
	}
	if obj.Object == nil {
		return nil, &FieldError{Field: "<object>", Message: "not a JSON object"}
	}
	return ValidateWithWarnings(gvk, obj)
}

// FieldErrors returns the *FieldError values that err joins.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// errorList collects the problems of one object.
type errorList struct {
	errs     []error
	warnings []string
}

func (e *errorList) warn(p *field.Path, format string, args ...any) {
	e.warnings = append(e.warnings, p.String()+": "+fmt.Sprintf(format, args...))
}

func (e *errorList) add(p *field.Path, format string, args ...any) {
	e.errs = append(e.errs, &FieldError{Field: p.String(), Message: fmt.Sprintf(format, args...)})
}

func (e *errorList) len() int { return len(e.errs) }

func (e *errorList) err() error { return errors.Join(e.errs...) }
