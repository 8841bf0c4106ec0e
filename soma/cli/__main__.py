"""`python -m soma.cli`: the same as the `soma` command."""

import sys

from soma.cli.main import main

sys.exit(main())
