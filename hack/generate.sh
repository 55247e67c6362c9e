#!/usr/bin/env bash
# Regenerates every generated file from its source: deepcopy, the MeshInstall
# CRD and the operator's RBAC from controller-gen markers, and the Istio API
# CRDs of charts/base from istio.io/api, and the OLM bundle from all of them.
#
#   hack/generate.sh          rewrite the generated files
#   hack/generate.sh --check  regenerate, then fail naming every generated
#                             file that differs from what git has committed
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=$(hack/setup-tools.sh | tail -1)
CG="$BIN/controller-gen"
GENERATED=(api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/role.yaml charts/base/crds bundle bundle.Dockerfile)

"$CG" object:headerFile=hack/boilerplate.go.txt paths=./api/...
"$CG" crd:allowDangerousTypes=true paths=./api/... output:crd:artifacts:config=config/crd/bases
"$CG" rbac:roleName=manager-role paths=./controllers/... output:rbac:artifacts:config=config/rbac
go run ./hack/gen-base-crds
go run ./hack/gen-bundle

if [[ "${1:-}" == "--check" ]]; then
	stale=$(git status --porcelain -- "${GENERATED[@]}")
	if [[ -n "$stale" ]]; then
		echo "generated files are stale (run 'make generate' and commit the result):" >&2
		echo "$stale" >&2
		git --no-pager diff --stat -- "${GENERATED[@]}" >&2
		exit 1
	fi
	echo "generated files are up to date" >&2
fi
