"""`python -m runtime`: the command line (runtime/cli.py)."""

import sys

from runtime.cli import main

sys.exit(main())
