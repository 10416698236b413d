"""`python -m runtime`: the command line (runtime/cli.py)."""

from runtime.cli import run

run()
