#!/usr/bin/env bash
# Build the OpenID Provider that the single sign-on tests sign in through (tools/oidc-provider: a small
# main around the certified provider library github.com/zitadel/oidc/v3, from the Go module proxy).
#
# Dex, the provider issue 20 names, cannot be built here: the module proxy serves github.com/dexidp/dex
# only at v0.6.1 and v2.13.0+incompatible (2018, no groups for static users) and refuses commit
# pseudo-versions, and Dex's go.mod `replace` directive rules out `go install` of a newer commit anyway.
#
# Idempotent: the binary lands in $FLEETGATE_CACHE_DIR/oidc-provider/<stamp>/ (else
# <repo>/.cache/oidc-provider/) and is rebuilt only when the module's inputs change. Concurrent runs wait
# on a lock. The last line printed is the binary's path.
#
# Usage: scripts/build-oidc-provider.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="$repo/tools/oidc-provider"
if [[ -n "${FLEETGATE_CACHE_DIR:-}" ]]; then
  cache_root="$FLEETGATE_CACHE_DIR/oidc-provider"
else
  cache_root="$repo/.cache/oidc-provider"
fi
# The stamp hashes the module's inputs (go.mod pins the library version), so any edit rebuilds.
stamp="$(cat "$module/go.mod" "$module/go.sum" "$module/main.go" | sha256sum | cut -c1-16)"
out="$cache_root/$stamp"
binary="$out/oidc-provider"

mkdir -p "$cache_root"
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi
exec 9>"$cache_root/.build.lock"
flock 9
if [[ ! -x "$binary" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "build-oidc-provider.sh: the Go toolchain (go) is required to build tools/oidc-provider" >&2
    exit 1
  fi
  echo "build-oidc-provider.sh: building tools/oidc-provider into $out (minutes on a small machine, once)" >&2
  mkdir -p "$out"
  tmp="$(mktemp -d "$out/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (
    cd "$module"
    # go.mod and go.sum are committed and tidy: build exactly them, never rewrite them.
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" CGO_ENABLED=0
    go build -trimpath -ldflags "-s -w" -o "$tmp/oidc-provider" .
  ) >&2
  mv -f "$tmp/oidc-provider" "$binary"
fi
echo "$binary"
