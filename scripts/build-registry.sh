#!/usr/bin/env bash
# Build the pinned OCI registry (CNCF Distribution, github.com/distribution/distribution/v3, from the Go
# module proxy) that the Helm OCI tests push charts to and pull them from, into
#   $FLEETGATE_CACHE_DIR/registry/bin/registry   when FLEETGATE_CACHE_DIR is set (CI: outside the clone),
#   <repo>/.cache/registry/bin/registry          otherwise (.cache/ is gitignored).
#
# Rebuilt only when REGISTRY_VERSION changes (a stamp file next to the binary). Concurrent runs wait on a
# lock. The last line printed is the binary's path. tests/chart_servers.py calls it when the binary is missing.
#
# Usage: scripts/build-registry.sh
set -euo pipefail

REGISTRY_VERSION="v3.1.2"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${FLEETGATE_CACHE_DIR:-}" ]]; then
    bin_dir="${FLEETGATE_CACHE_DIR}/registry/bin"
else
    bin_dir="${repo_root}/.cache/registry/bin"
fi
binary="${bin_dir}/registry"
stamp="${bin_dir}/registry.version"

fresh() { [[ -x "${binary}" && -f "${stamp}" && "$(cat "${stamp}")" == "${REGISTRY_VERSION}" ]]; }

if fresh; then
    echo "${binary}"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build-registry.sh: the Go toolchain (go) is required to build the registry ${REGISTRY_VERSION}" >&2
    exit 1
fi
mkdir -p "${bin_dir}"
exec 9>"${bin_dir}/.registry-build.lock"
flock 9
if fresh; then
    echo "${binary}"
    exit 0
fi
echo "build-registry.sh: building distribution ${REGISTRY_VERSION} into ${bin_dir} (minutes, once)" >&2
CGO_ENABLED=0 GOBIN="${bin_dir}" GOFLAGS="-trimpath" \
    go install "github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}" >&2
echo "${REGISTRY_VERSION}" > "${stamp}"
echo "${binary}"
