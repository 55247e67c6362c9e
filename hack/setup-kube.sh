#!/usr/bin/env bash
# Builds the binaries of a local Kubernetes control plane from pinned Go
# modules into a cache outside the repository:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler  (hack/tools/kube)
#   etcd                                                     (hack/tools/kube/etcd)
#   kwok, the fake kubelet, plus its stage files             (hack/tools/kube/kwok)
#
# The binary directory has the layout envtest expects for KUBEBUILDER_ASSETS.
# Its path is printed as the last line of stdout; everything else goes to
# stderr, so callers can do:
#
#   BIN=$(hack/setup-kube.sh | tail -1)
#
# Environment:
#   MIZZEN_CACHE   cache root (default: $HOME/.cache/mizzen)
#
# Flags:
#   --force        rebuild even if the cache is up to date
#
# Idempotent: when every binary is present and the stamp file matches the
# pinned versions and tool modules, it does nothing.
set -euo pipefail

KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

# Bump when the way the binaries are built changes, to force a rebuild.
BUILD_REVISION=1

FORCE=0
for arg in "$@"; do
	case "$arg" in
	--force) FORCE=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
		exit 0
		;;
	*)
		echo "setup-kube: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/hack/tools/kube"
CACHE_ROOT="${MIZZEN_CACHE:-$HOME/.cache/mizzen}"
OUT="$CACHE_ROOT/kube-$KUBE_VERSION"
BIN="$OUT/bin"
STAGES="$OUT/kwok-stages"
STAMP="$OUT/stamp"

BINARIES=(kube-apiserver etcd kube-controller-manager kube-scheduler kwok)
STAGE_FILES=(
	kustomize/stage/node/fast/node-initialize.yaml
	kustomize/stage/pod/fast/pod-ready.yaml
	kustomize/stage/pod/fast/pod-complete.yaml
	kustomize/stage/pod/fast/pod-delete.yaml
)

log() { echo "setup-kube: $*" >&2; }

stamp_content() {
	echo "kube=$KUBE_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION revision=$BUILD_REVISION"
	(cd "$TOOLS" && cat go.mod go.sum etcd/go.mod etcd/go.sum etcd/main.go kwok/go.mod kwok/go.sum) |
		sha256sum | cut -d' ' -f1
}

up_to_date() {
	[[ -f "$STAMP" ]] || return 1
	local b f
	for b in "${BINARIES[@]}"; do
		[[ -x "$BIN/$b" ]] || return 1
	done
	for f in "${STAGE_FILES[@]}"; do
		[[ -s "$STAGES/$(basename "$f")" ]] || return 1
	done
	[[ "$(cat "$STAMP")" == "$(stamp_content)" ]]
}

if [[ $FORCE == 0 ]] && up_to_date; then
	echo "$BIN"
	exit 0
fi

mkdir -p "$BIN" "$STAGES"

# Serialise concurrent runs (e.g. several test packages at once).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$OUT/.lock"
	if ! flock -n 9; then
		log "another setup-kube.sh is building into $OUT; waiting for it"
		flock 9
	fi
	if [[ $FORCE == 0 ]] && up_to_date; then
		echo "$BIN"
		exit 0
	fi
fi

command -v go >/dev/null 2>&1 || {
	log "go is not on PATH"
	exit 1
}

export CGO_ENABLED=0
# The tool modules' go.mod/go.sum pin every dependency: build exactly those.
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"

VERSION_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"

# run_with_progress NAME CMD... runs CMD, printing the elapsed time every few
# seconds, and shows the command's output only if it fails.
run_with_progress() {
	local name=$1
	shift
	local logf
	logf=$(mktemp "${TMPDIR:-/tmp}/setup-kube-$name.XXXXXX")
	local start=$SECONDS
	"$@" >"$logf" 2>&1 &
	local pid=$!
	local tty=0
	[[ -t 2 ]] && tty=1
	local last=-1
	while kill -0 "$pid" 2>/dev/null; do
		local el=$((SECONDS - start))
		if [[ $tty == 1 ]]; then
			printf '\rsetup-kube: building %s ... %ds ' "$name" "$el" >&2
		elif ((el / 30 != last)); then
			last=$((el / 30))
			log "building $name ... ${el}s"
		fi
		sleep 1
	done
	local rc=0
	wait "$pid" || rc=$?
	[[ $tty == 1 ]] && printf '\r\033[K' >&2
	if [[ $rc != 0 ]]; then
		log "building $name FAILED after $((SECONDS - start))s:"
		tail -n 60 "$logf" >&2
		rm -f "$logf"
		return "$rc"
	fi
	rm -f "$logf"
	log "built $name in $((SECONDS - start))s"
}

build() { # build NAME MODULE_DIR PACKAGE LDFLAGS
	local name=$1 dir=$2 pkg=$3 ldflags=$4
	run_with_progress "$name" \
		bash -c 'cd "$1" && go build -ldflags "$2" -o "$3.tmp" "$4" && mv -f "$3.tmp" "$3"' \
		_ "$dir" "$ldflags" "$BIN/$name" "$pkg"
}

TOTAL_START=$SECONDS
log "building Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION into $BIN (first build takes ~15 minutes)"
rm -f "$STAMP"

build kube-apiserver "$TOOLS" k8s.io/kubernetes/cmd/kube-apiserver "$VERSION_LDFLAGS"
build etcd "$TOOLS/etcd" . "-s -w"
build kube-controller-manager "$TOOLS" k8s.io/kubernetes/cmd/kube-controller-manager "$VERSION_LDFLAGS"
build kube-scheduler "$TOOLS" k8s.io/kubernetes/cmd/kube-scheduler "$VERSION_LDFLAGS"
build kwok "$TOOLS/kwok" sigs.k8s.io/kwok/cmd/kwok "-s -w"

# kwok needs stage definitions to move nodes and pods through their
# lifecycle; take them from the pinned module.
KWOK_DIR=$(cd "$TOOLS/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
for f in "${STAGE_FILES[@]}"; do
	if [[ ! -s "$KWOK_DIR/$f" ]]; then
		log "kwok stage file $f not found in $KWOK_DIR"
		exit 1
	fi
	install -m 0644 "$KWOK_DIR/$f" "$STAGES/$(basename "$f")"
done

stamp_content >"$STAMP"
log "done in $((SECONDS - TOTAL_START))s"
echo "$BIN"
