"""`python -m clmr` runs the command line."""

import sys

from clmr.cli import main

sys.exit(main())
