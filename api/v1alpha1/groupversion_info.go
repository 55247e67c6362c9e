// Package v1alpha1 holds the install.mizzen.dev/v1alpha1 API: the MeshInstall
// resource that the Mizzen operator reconciles into a running mesh.
// +kubebuilder:object:generate=true
// +groupName=install.mizzen.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "install.mizzen.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
