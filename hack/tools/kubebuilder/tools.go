//go:build tools

// Package kubebuilder pins the kubebuilder CLI, so that hack/check-project.sh
// builds it at exactly this version to validate the repository's PROJECT file.
package kubebuilder

import (
	_ "sigs.k8s.io/kubebuilder/v4"
)
