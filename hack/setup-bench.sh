#!/usr/bin/env bash
# Installs what the data-plane benchmark compares against and loads with:
# fortio (pinned in hack/tools/fortio, built into the cache) and nginx and
# haproxy from Debian (apt-get, only when missing). Prints the bin directory
# holding fortio as the last line of stdout. Idempotent.
#
#   BIN=$(hack/setup-bench.sh | tail -1)
#
# Environment: MIZZEN_CACHE (default: $HOME/.cache/mizzen).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD="$ROOT/hack/tools/fortio"
BIN="${MIZZEN_CACHE:-$HOME/.cache/mizzen}/bench/bin"
STAMP="$BIN/.stamp"
want=$(cat "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -d' ' -f1)

if [[ ! -x "$BIN/fortio" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
	mkdir -p "$BIN"
	echo "setup-bench: building fortio (pinned in hack/tools/fortio/go.mod)..." >&2
	(cd "$MOD" && GOFLAGS=-mod=mod go build -o "$BIN/fortio" fortio.org/fortio)
	echo "$want" >"$STAMP"
fi

missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
if ((${#missing[@]})); then
	echo "setup-bench: installing ${missing[*]} from Debian..." >&2
	sudo=""
	[[ $(id -u) == 0 ]] || sudo="sudo"
	$sudo apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	# The packages start system services; the benchmark runs its own.
	$sudo systemctl stop nginx haproxy >/dev/null 2>&1 || true
	pkill -x nginx >/dev/null 2>&1 || true
	pkill -x haproxy >/dev/null 2>&1 || true
fi
echo "$BIN"
