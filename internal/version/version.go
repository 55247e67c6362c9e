// Package version holds the operator's version and the image it installs.
// Release builds set them with -ldflags "-X github.com/mizzen-mesh/mizzen/internal/version.Version=...".
package version

var (
	// Version of the operator, and of the mesh it installs by default.
	Version = "0.1.0"
	// Hub is the default image repository prefix of the mesh's image.
	Hub = "ghcr.io/mizzen-mesh"
	// Image is the name of the one image holding every mesh binary.
	Image = "mizzen"
)
