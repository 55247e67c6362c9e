package bundlegen

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// description is the CSV's long description (markdown), shown on the
// operator's OperatorHub page.
//
//go:embed description.md
var description string

// icon is Mizzen's logo: a mizzen sail whose panels are a mesh.
//
//go:embed icon.svg
var icon []byte

func iconBase64() string { return base64.StdEncoding.EncodeToString(icon) }

// UI descriptors the console renders fields with.
const (
	xText          = "urn:alm:descriptor:com.tectonic.ui:text"
	xNumber        = "urn:alm:descriptor:com.tectonic.ui:number"
	xPodCount      = "urn:alm:descriptor:com.tectonic.ui:podCount"
	xBooleanSwitch = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch"
	xAdvanced      = "urn:alm:descriptor:com.tectonic.ui:advanced"
	xSelect        = "urn:alm:descriptor:com.tectonic.ui:select:" // + one option each
	xFieldGroup    = "urn:alm:descriptor:com.tectonic.ui:fieldGroup:"
	xConditions    = "urn:alm:descriptor:io.kubernetes.conditions"
	xStatusText    = "urn:alm:descriptor:text"
)

// descriptor is a field of a custom resource shown in the console. Its
// description is the CRD schema's description of the field, so the two never
// disagree, and a path the schema does not have fails the generation.
type descriptor struct {
	path    string
	display string
	// x are the x-descriptors; the "select" marker expands to one select
	// option per value of the field's enum.
	x []string
}

const selectEnum = "select"

// crdDescription is how the CSV describes one version of an owned CRD.
type crdDescription struct {
	displayName string
	spec        []descriptor
	status      []descriptor
}

// owned lists the CSV's description of every CRD version the bundle carries,
// by kind/version. A CRD version missing here fails the generation.
var owned = map[string]crdDescription{
	"MeshInstall/v1alpha1": {
		displayName: "Mesh Install",
		spec: []descriptor{
			{"profile", "Profile", []string{selectEnum}},
			{"version", "Mesh version", []string{xText}},
			{"namespace", "Mesh namespace", []string{xText}},
			{"revision", "Revision", []string{xText}},
			{"components", "Components", []string{xFieldGroup + "components"}},
			{"components.base.enabled", "Istio API CRDs", []string{xFieldGroup + "components", xBooleanSwitch}},
			{"components.controlPlane.enabled", "Control plane", []string{xFieldGroup + "components", xBooleanSwitch}},
			{"components.controlPlane.replicas", "Control plane replicas", []string{xFieldGroup + "components", xPodCount}},
			{"components.injector.enabled", "Sidecar injector", []string{xFieldGroup + "components", xBooleanSwitch}},
			{"components.ingressGateways", "Ingress gateways", []string{xFieldGroup + "components", xAdvanced}},
			{"components.egressGateways", "Egress gateways", []string{xFieldGroup + "components", xAdvanced}},
			{"components.addons.prometheus.enabled", "Prometheus", []string{xFieldGroup + "addons", xBooleanSwitch}},
			{"components.addons.grafana.enabled", "Grafana", []string{xFieldGroup + "addons", xBooleanSwitch}},
			{"components.addons.jaeger.enabled", "Jaeger", []string{xFieldGroup + "addons", xBooleanSwitch}},
			{"components.addons.kiali.enabled", "Kiali", []string{xFieldGroup + "addons", xBooleanSwitch}},
			{"meshConfig", "Mesh config", []string{xFieldGroup + "meshConfig"}},
			{"meshConfig.accessLogFile", "Access log file", []string{xFieldGroup + "meshConfig", xText}},
			{"meshConfig.enableTracing", "Tracing", []string{xFieldGroup + "meshConfig", xBooleanSwitch}},
			{"meshConfig.trustDomain", "Trust domain", []string{xFieldGroup + "meshConfig", xText}},
			{"meshConfig.outboundTrafficPolicy.mode", "Outbound traffic policy", []string{xFieldGroup + "meshConfig", selectEnum}},
			{"meshConfig.defaultConfig.tracing.sampling", "Trace sampling (%)", []string{xFieldGroup + "meshConfig", xNumber}},
			{"values", "Chart values", []string{xAdvanced}},
			{"purgeOnDelete", "Purge on delete", []string{xAdvanced, xBooleanSwitch}},
		},
		status: []descriptor{
			{"conditions", "Conditions", []string{xConditions}},
			{"components", "Components", nil},
			{"observedGeneration", "Observed generation", []string{xStatusText}},
			{"appliedProfile", "Applied profile", []string{xStatusText}},
			{"appliedVersion", "Applied version", []string{xStatusText}},
			{"appliedRevision", "Applied revision", []string{xStatusText}},
		},
	},
}

// ownedCRDs describes every served version of every bundled CRD.
func ownedCRDs(crds []*apiextensionsv1.CustomResourceDefinition) ([]operatorsv1alpha1.CRDDescription, error) {
	var out []operatorsv1alpha1.CRDDescription
	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			key := crd.Spec.Names.Kind + "/" + v.Name
			d, ok := owned[key]
			if !ok {
				return nil, fmt.Errorf("CRD %s version %s has no description for the CSV; add it to hack/gen-bundle", crd.Name, v.Name)
			}
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				return nil, fmt.Errorf("CRD %s version %s has no schema", crd.Name, v.Name)
			}
			root := v.Schema.OpenAPIV3Schema
			desc := operatorsv1alpha1.CRDDescription{
				Name:        crd.Name,
				Version:     v.Name,
				Kind:        crd.Spec.Names.Kind,
				DisplayName: d.displayName,
				Description: oneLine(root.Description),
			}
			for _, sd := range d.spec {
				path, text, x, err := describe(root, "spec", sd)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", key, err)
				}
				desc.SpecDescriptors = append(desc.SpecDescriptors,
					operatorsv1alpha1.SpecDescriptor{Path: path, DisplayName: sd.display, Description: text, XDescriptors: x})
			}
			for _, sd := range d.status {
				path, text, x, err := describe(root, "status", sd)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", key, err)
				}
				desc.StatusDescriptors = append(desc.StatusDescriptors,
					operatorsv1alpha1.StatusDescriptor{Path: path, DisplayName: sd.display, Description: text, XDescriptors: x})
			}
			out = append(out, desc)
		}
	}
	return out, nil
}

// describe looks a descriptor's field up in the schema under top (spec or
// status) and returns its path, description and x-descriptors.
func describe(root *apiextensionsv1.JSONSchemaProps, top string, d descriptor) (string, string, []string, error) {
	s := root
	for _, name := range append([]string{top}, strings.Split(d.path, ".")...) {
		child, ok := s.Properties[name]
		if !ok {
			return "", "", nil, fmt.Errorf("%s.%s: the schema has no field %q", top, d.path, name)
		}
		s = &child
	}
	var x []string
	for _, xd := range d.x {
		if xd != selectEnum {
			x = append(x, xd)
			continue
		}
		if len(s.Enum) == 0 {
			return "", "", nil, fmt.Errorf("%s.%s: a select needs an enum in the schema", top, d.path)
		}
		for _, e := range s.Enum {
			var opt string
			if err := json.Unmarshal(e.Raw, &opt); err != nil {
				return "", "", nil, fmt.Errorf("%s.%s: enum value %s is not a string", top, d.path, e.Raw)
			}
			x = append(x, xSelect+opt)
		}
	}
	if s.Description == "" {
		return "", "", nil, fmt.Errorf("%s.%s has no description in the schema", top, d.path)
	}
	return d.path, oneLine(s.Description), x, nil
}

// oneLine joins the lines of a schema description (controller-gen keeps the
// Go comment's line breaks).
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
