"""`python -m deploy.stack COMMAND` (run from the repository root)."""

import sys

from deploy.stack.cli import main

sys.exit(main(sys.argv[1:]))
