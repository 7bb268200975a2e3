"""``python -m loadtest.fuzz``: see loadtest/fuzz/cli.py."""

import sys

from loadtest.fuzz.cli import main

sys.exit(main())
