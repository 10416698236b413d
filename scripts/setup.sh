#!/usr/bin/env bash
# Sets up a fresh Debian machine for the project: Debian packages, a virtual
# environment in .venv holding the project (editable) and its test extras, and
# the blobs and test targets built with the venv's scons.
#
# A virtual environment because Debian's own /usr/bin/python3 refuses
# `pip install` into itself (PEP 668, externally-managed-environment); the
# venv works the same whichever python3 is first on PATH. Idempotent: a second
# run only checks (apt and pip are skipped when nothing they provide changed).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
python="$venv/bin/python"
# Records what the venv's packages were installed from: pip runs again when
# pyproject.toml or the interpreter behind the venv changes.
install_stamp="$venv/revive-installed"

missing=()
command -v gcc >/dev/null || missing+=(gcc)
{ command -v ld && command -v as; } >/dev/null || missing+=(binutils)
[ -e /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] || missing+=(linux-libc-dev)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
command -v flock >/dev/null || missing+=(util-linux)
# nft: the network lock of TCP connections at dump (docs/tcp.md); redis-server: a server the TCP tests dump.
command -v nft >/dev/null || missing+=(nftables)
command -v redis-server >/dev/null || missing+=(redis-server)
# Debian splits `venv`'s ensurepip (which puts pip into a new venv) into
# python3-venv; without it `python3 -m venv` fails half way.
"$python" -c '' 2>/dev/null || python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A venv whose interpreter no longer runs (its base python was removed or
# upgraded away) is made anew.
if ! "$python" -c '' 2>/dev/null; then
    python3 -m venv --clear "$venv"
fi

wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.base_prefix, sys.version.split()[0])')"
if [ "$(cat "$install_stamp" 2>/dev/null)" != "$wanted" ]; then
    "$python" -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$wanted" >"$install_stamp"
fi

# One compiler per core: a fresh clone compiles every blob and test target.
flock /tmp/revive-scons.lock "$venv/bin/scons" -Q -j"$(nproc)" blobs targets
