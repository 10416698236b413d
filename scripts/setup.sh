#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine and builds the blobs
# and test targets. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in gcc ld as; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -e /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] || missing+=(headers)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq gcc binutils linux-libc-dev libc6-dev util-linux >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
flock /tmp/revive-scons.lock scons -Q blobs targets
