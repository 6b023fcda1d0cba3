"""The native production stack on one host, run as `python -m deploy.stack up|down|status|stop NAME|start NAME|check`.

Importing any module of this package has no side effects: binaries are looked up, the environment is read and
files are written only when a command runs. Other tools (tests, the load tool) import the port names from here.
"""

from deploy.stack.config import CHILD_MARK, PORT_DEFAULTS, PORT_NAMES, StackError

__all__ = ["CHILD_MARK", "PORT_DEFAULTS", "PORT_NAMES", "StackError"]
