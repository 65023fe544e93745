#!/usr/bin/env bash
# Build the pinned OPA server binary with `go install`, into
#   $FLEETGATE_CACHE_DIR/opa/bin/opa   when FLEETGATE_CACHE_DIR is set (CI: outside the clone), else
#   <repo>/.cache/bin/opa              (.cache/ is gitignored).
#
# OPA is the reference Rego engine of the policy gate (policies/engine/opa_engine.py).
# The binary is rebuilt only when OPA_VERSION changes: a stamp file next to the binary
# records the version it was built from. The last line printed is the binary's path.
#
# Usage: scripts/build-opa.sh            build if missing or stale, print the binary path
#        OPA_FORCE_BUILD=1 scripts/build-opa.sh   rebuild unconditionally
set -euo pipefail

OPA_VERSION="v1.22.3"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${FLEETGATE_CACHE_DIR:-}" ]]; then
    bin_dir="${FLEETGATE_CACHE_DIR}/opa/bin"
else
    bin_dir="${repo_root}/.cache/bin"
fi
binary="${bin_dir}/opa"
stamp="${bin_dir}/opa.version"

if [[ -z "${OPA_FORCE_BUILD:-}" && -x "${binary}" && -f "${stamp}" \
      && "$(cat "${stamp}")" == "${OPA_VERSION}" ]]; then
    echo "${binary}"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build-opa.sh: the Go toolchain (go) is required to build OPA ${OPA_VERSION}" >&2
    exit 1
fi

mkdir -p "${bin_dir}"
# One build at a time (parallel test workers, CI and a developer may all ask); re-check after waiting.
exec 9>"${bin_dir}/.opa-build.lock"
flock 9
if [[ -z "${OPA_FORCE_BUILD:-}" && -x "${binary}" && -f "${stamp}" \
      && "$(cat "${stamp}")" == "${OPA_VERSION}" ]]; then
    echo "${binary}"
    exit 0
fi
echo "build-opa.sh: building OPA ${OPA_VERSION} into ${bin_dir} (takes minutes on a small machine)" >&2
# CGO off: a static binary; -trimpath for a reproducible build.
CGO_ENABLED=0 GOBIN="${bin_dir}" GOFLAGS="-trimpath" \
    go install "github.com/open-policy-agent/opa@${OPA_VERSION}" >&2
echo "${OPA_VERSION}" > "${stamp}"
"${binary}" version >&2
echo "${binary}"
