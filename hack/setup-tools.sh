#!/usr/bin/env bash
# Builds the code generators the repository uses (hack/tools/codegen, pinned
# versions) into a cache outside the repository, and prints the bin directory
# as the last line of stdout. Idempotent: a current cache costs nothing.
#
#   BIN=$(hack/setup-tools.sh | tail -1)
#
# Environment: MIZZEN_CACHE (default: $HOME/.cache/mizzen).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD="$ROOT/hack/tools/codegen"
BIN="${MIZZEN_CACHE:-$HOME/.cache/mizzen}/tools/bin"
STAMP="$BIN/.stamp"
want=$(cat "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -d' ' -f1)

if [[ -x "$BIN/controller-gen" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
	echo "$BIN"
	exit 0
fi
mkdir -p "$BIN"
echo "setup-tools: building controller-gen (pinned in hack/tools/codegen/go.mod)..." >&2
start=$SECONDS
(cd "$MOD" && GOFLAGS=-mod=mod go build -o "$BIN/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)
echo "$want" >"$STAMP"
echo "setup-tools: built in $((SECONDS - start))s" >&2
echo "$BIN"
