"""Entry point: python -m loadtest --help."""

import sys

from loadtest.cli import main

sys.exit(main())
