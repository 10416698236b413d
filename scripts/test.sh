#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite with the
# venv's interpreter, which the tests also use for the runtime they start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
