#!/usr/bin/env bash
# Builds static binaries of the operator (main.go, as "manager") and of every
# mesh program under cmd/ into the directory given (default: bin/).
#
#   hack/build-binaries.sh [OUT]
#
# Environment: VERSION (default: the source's), GOOS/GOARCH as usual.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/bin}
cd "$ROOT"
mkdir -p "$OUT"
ldflags="-s -w"
if [[ -n "${VERSION:-}" ]]; then
	ldflags="$ldflags -X github.com/mizzen-mesh/mizzen/internal/version.Version=${VERSION#v}"
fi
export CGO_ENABLED=0
# grpcnotrace: without gRPC's request tracing (golang.org/x/net/trace and
# its html/template) the linker drops unused methods, a third of the
# proxy's binary and of its resident memory. test/cluster.BuildTags says
# the same for the binaries the tests build.
tags=grpcnotrace
go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$OUT/manager" .
for dir in cmd/*/; do
	[[ -f "$dir/main.go" ]] || continue
	go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$OUT/$(basename "$dir")" "./$dir"
done
ls -l "$OUT" >&2
