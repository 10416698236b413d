#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the live demo with the venv's
# interpreter: a running program is dumped, killed, restored, and seen to
# continue where it was.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
