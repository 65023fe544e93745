#!/usr/bin/env bash
# Debian packages the test suite needs beyond the services: chromium for the browser tests; gnupg (gpg,
# gpg-agent) and openssh-client (ssh-keygen) for the verified-commit tests, which make real keys and signed
# commits (and for Fleetgate itself when a repository requires signed commits).
# `make test` runs this before the suite, so a fresh machine needs nothing installed by hand. As root it
# installs with apt-get; otherwise through sudo when that works without a password; otherwise it stops and
# prints the exact command to run.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
{ command -v gpg && command -v gpg-agent && command -v gpgconf; } >/dev/null || need+=(gnupg)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "The tests need Debian's ${need[*]}. Install them first, then run make test again:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing Debian packages for the tests: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
