#!/usr/bin/env bash
# Build the real Kubernetes API server (and the etcd it is released with) for Fleetgate's tests.
#
# No prebuilt kube-apiserver can be downloaded here, so tools/kube-apiserver is a tiny Go module
# that requires the published k8s.io/kubernetes module at a pinned release and builds its
# cmd/kube-apiserver unchanged. etcd is built from the same module graph (go.etcd.io/etcd/server/v3
# at the version that Kubernetes release pins); Debian's etcd-server (3.4) is too old for it.
#
# Idempotent: the binaries land in .cache/kube-apiserver/<version>/ and are rebuilt only when the
# stamp there does not match the pinned version and the module's sources. Concurrent runs wait on a lock.
#
# Usage: scripts/build-kube-apiserver.sh [--print-dir]
#   --print-dir   print only the directory holding the binaries (after building if needed)
# Env:   FLEETGATE_KUBE_CACHE   cache root; else $FLEETGATE_CACHE_DIR/kube-apiserver when that is set
#                               (CI keeps its caches outside the clone); else <repo>/.cache/kube-apiserver
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="$repo/tools/kube-apiserver"
print_dir_only=0
if [[ "${1:-}" == "--print-dir" ]]; then
  print_dir_only=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--print-dir]" >&2
  exit 2
fi

say() { if [[ $print_dir_only -eq 0 ]]; then echo "$@"; else echo "$@" >&2; fi; }

version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$module/go.mod")"
if [[ -z "$version" ]]; then
  echo "error: cannot find the pinned k8s.io/kubernetes version in $module/go.mod" >&2
  exit 1
fi
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$module/go.mod")"

if [[ -n "${FLEETGATE_KUBE_CACHE:-}" ]]; then
  cache_root="$FLEETGATE_KUBE_CACHE"
elif [[ -n "${FLEETGATE_CACHE_DIR:-}" ]]; then
  cache_root="$FLEETGATE_CACHE_DIR/kube-apiserver"
else
  cache_root="$repo/.cache/kube-apiserver"
fi
out="$cache_root/$version"
stamp_file="$out/.stamp"
# The stamp names the pinned versions and hashes the module's inputs, so any edit rebuilds.
stamp="kubernetes=$version etcd=$etcd_version inputs=$(cat "$module/go.mod" "$module/go.sum" "$module/main.go" \
  "$module/cmd/etcd/main.go" | sha256sum | cut -c1-16)"

is_built() {
  [[ -x "$out/kube-apiserver" && -x "$out/etcd" && -f "$stamp_file" ]] && [[ "$(cat "$stamp_file")" == "$stamp" ]]
}

mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
flock 9

if is_built; then
  say "kube-apiserver $version and etcd $etcd_version already built (stamp matches)"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "error: Go is required to build kube-apiserver (go.mod asks for $(awk '$1=="go"{print $2}' "$module/go.mod"))" >&2
    exit 1
  fi
  say "building kube-apiserver $version and etcd $etcd_version into $out (first build: tens of minutes on 2 cores)"
  mkdir -p "$out"
  rm -f "$stamp_file"
  tmp="$(mktemp -d "$out/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  start=$(date +%s)
  ver_pkg=k8s.io/component-base/version
  minor="${version#v1.}"
  minor="${minor%%.*}"
  ldflags="-s -w -X $ver_pkg.gitVersion=$version -X $ver_pkg.gitMajor=1 -X $ver_pkg.gitMinor=$minor"
  ldflags+=" -X $ver_pkg.gitTreeState=clean -X $ver_pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  (
    cd "$module"
    # go.mod and go.sum are committed and tidy: build exactly them, never rewrite them.
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" CGO_ENABLED=0
    go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" .
    go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" ./cmd/etcd
  ) >&2
  mv -f "$tmp/kube-apiserver" "$out/kube-apiserver"
  mv -f "$tmp/etcd" "$out/etcd"
  echo "$stamp" >"$stamp_file"
  say "built in $(( $(date +%s) - start ))s"
fi

if [[ $print_dir_only -eq 1 ]]; then
  echo "$out"
else
  echo "kube-apiserver: $out/kube-apiserver ($version)"
  echo "etcd:           $out/etcd ($etcd_version)"
fi
