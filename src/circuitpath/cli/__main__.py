"""`python -m circuitpath.cli`: the same as the `circuitpath` command."""

import sys

from circuitpath.cli import main

sys.exit(main())
