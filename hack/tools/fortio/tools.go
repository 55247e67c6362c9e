//go:build tools

// Package tools pins fortio, the load generator of the data-plane benchmark
// (hack/bench-dataplane.sh); hack/setup-bench.sh builds it from here.
package tools

import _ "fortio.org/fortio"
