//go:build tools

package main

// The CRDs come from this module's kubernetes/customresourcedefinitions.gen.yaml;
// importing one of its packages keeps the module (at the version go.mod pins)
// in the module graph, where `go list -m istio.io/api` finds it.
import _ "istio.io/api/networking/v1"
