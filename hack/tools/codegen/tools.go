//go:build tools

// Package codegen pins the code generators the repository uses, so that
// hack/ scripts build them at exactly these versions.
package codegen

import (
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
