"""`python -m blobgen`: the same command line as the `blobgen` console script."""

import sys

from blobgen.cli import main

sys.exit(main())
