#!/usr/bin/env bash
# Debian packages the test suite needs beyond the services: chromium for the browser tests.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
