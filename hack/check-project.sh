#!/usr/bin/env bash
# Proves that the kubebuilder CLI accepts the repository's PROJECT file.
#
# Builds kubebuilder (pinned in hack/tools/kubebuilder/go.mod) into a cache
# outside the repository, once, then runs
#
#   kubebuilder edit --multigroup=false
#
# on a copy of PROJECT in a temporary directory. That command loads PROJECT
# the way every kubebuilder command does (strict YAML: a malformed file, an
# unknown or mistyped field, or an unknown project version fails), resolves
# every plugin of its `layout` (an unknown layout fails), runs the edit
# subcommand of those plugins and writes PROJECT back. The check then
# requires that:
#   - kubebuilder exited 0;
#   - the PROJECT it wrote back is byte-identical to ours, i.e. ours is in
#     kubebuilder's own form: field order, header comment, single-group
#     layout, defaults left out (a cluster-scoped API has no `namespaced`
#     field; kubebuilder writes only `namespaced: true`);
#   - cliVersion is the version of the pinned kubebuilder.
# The repository is never written to.
#
#   hack/check-project.sh [PROJECT-FILE]   (default: the repository's PROJECT)
#
# Progress and failures go to stderr; exit status 0 when the file is
# accepted, 1 when it is not. Idempotent build: a current cache costs nothing.
#
# Environment: MIZZEN_CACHE (default: $HOME/.cache/mizzen).
set -euo pipefail

# Bump when the way the binary is built changes, to force a rebuild.
BUILD_REVISION=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT_FILE=$(realpath "${1:-$ROOT/PROJECT}")
MOD="$ROOT/hack/tools/kubebuilder"
BIN="${MIZZEN_CACHE:-$HOME/.cache/mizzen}/tools/bin"
KB="$BIN/kubebuilder"
STAMP="$BIN/.stamp-kubebuilder"

log() { echo "check-project: $*" >&2; }

# The pinned version, e.g. v4.7.1; release binaries report it without the "v".
KB_VERSION=$(awk '$1 == "require" && $2 == "sigs.k8s.io/kubebuilder/v4" { print $3 }
	$1 == "sigs.k8s.io/kubebuilder/v4" { print $2 }' "$MOD/go.mod" | head -1)
if [[ -z "$KB_VERSION" ]]; then
	log "cannot find the kubebuilder version in $MOD/go.mod"
	exit 1
fi
CLI_VERSION=${KB_VERSION#v}
# As kubebuilder's release build sets them (build/.goreleaser.yml): without
# kubeBuilderVersion the binary built from a tools module calls itself "(devel)".
LDFLAGS="-X sigs.k8s.io/kubebuilder/v4/cmd.kubeBuilderVersion=$CLI_VERSION"
LDFLAGS+=" -X sigs.k8s.io/kubebuilder/v4/cmd.goos=$(go env GOOS)"
LDFLAGS+=" -X sigs.k8s.io/kubebuilder/v4/cmd.goarch=$(go env GOARCH)"

want=$({ cat "$MOD/go.mod" "$MOD/go.sum"; echo "$BUILD_REVISION $LDFLAGS"; } | sha256sum | cut -d' ' -f1)
if [[ -x "$KB" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
	log "kubebuilder $KB_VERSION is cached in $BIN"
else
	mkdir -p "$BIN"
	log "building kubebuilder $KB_VERSION (pinned in hack/tools/kubebuilder/go.mod) into $BIN..."
	start=$SECONDS
	(cd "$MOD" && GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -trimpath -ldflags "$LDFLAGS" \
		-o "$KB.tmp" sigs.k8s.io/kubebuilder/v4)
	mv -f "$KB.tmp" "$KB"
	echo "$want" >"$STAMP"
	log "built in $((SECONDS - start))s"
fi

# The binary must be the pinned release, or the cliVersion check means nothing.
kb_version=$("$KB" version 2>&1 || true)
if [[ "$kb_version" != *"KubeBuilderVersion:\"$CLI_VERSION\""* ]]; then
	log "$KB does not report version $CLI_VERSION: $kb_version"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-project.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
work="$tmp/work"
mkdir -p "$work" "$tmp/home"
cp "$PROJECT_FILE" "$work/PROJECT"
# go/v4's edit reads and rewrites the Dockerfile (unchanged); an empty one is
# left alone, so nothing of the repository is needed but PROJECT.
: >"$work/Dockerfile"

log "running: kubebuilder edit --multigroup=false (on a copy of $PROJECT_FILE)"
# A home of its own: no external plugins of the user's are discovered.
if ! (cd "$work" && env -u EXTERNAL_PLUGINS_PATH HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/home/.config" \
	"$KB" edit --multigroup=false) >"$tmp/out.log" 2>&1; then
	log "FAIL: kubebuilder $CLI_VERSION rejects $PROJECT_FILE:"
	# Without the usage text that kubebuilder prints after any error.
	awk '/^Usage:/ { skip = 1 } /^level=/ { skip = 0 } !skip' "$tmp/out.log" >&2
	exit 1
fi

fail=0
if ! cmp -s "$PROJECT_FILE" "$work/PROJECT"; then
	log "FAIL: kubebuilder $CLI_VERSION rewrites $PROJECT_FILE; make it what kubebuilder writes (+ is kubebuilder's):"
	diff -u --label "PROJECT (ours)" --label "PROJECT (kubebuilder $CLI_VERSION)" \
		"$PROJECT_FILE" "$work/PROJECT" >&2 || true
	fail=1
fi
extra=$(cd "$work" && find . -mindepth 1 ! -name PROJECT ! -name Dockerfile | sort)
if [[ -n "$extra" || -s "$work/Dockerfile" ]]; then
	log "FAIL: kubebuilder edit wrote more than PROJECT:"
	echo "$extra" >&2
	fail=1
fi
got=$(sed -n 's/^cliVersion: *//p' "$work/PROJECT")
if [[ "$got" != "$CLI_VERSION" ]]; then
	log "FAIL: cliVersion is \"$got\", want \"$CLI_VERSION\" (the kubebuilder pinned in hack/tools/kubebuilder)"
	fail=1
fi
if ((fail)); then
	exit 1
fi
log "ok: kubebuilder $CLI_VERSION accepts $PROJECT_FILE and writes it back unchanged"
