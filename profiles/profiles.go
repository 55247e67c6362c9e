// Package profiles embeds the MeshInstall profiles: each file is a fragment
// of a MeshInstall spec (components, meshConfig, values) that a user's spec
// is layered on.
package profiles

import "embed"

// FS holds <profile>.yaml for every profile.
//
//go:embed *.yaml
var FS embed.FS
