"""Session-wide: without the native stack's servers, the integration directory is left out of the run with
one line saying what is missing; with STACK_REQUIRED=1 (CI) it is collected, and its conftest fails the run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"
# Collected only when named on the command line (`make compose-test`): it drives a Docker engine.
collect_ignore = ["compose"]
REPO = Path(__file__).resolve().parents[1]
STACK_CHECK = [sys.executable, "-m", "deploy.stack", "check"]  # run from REPO
_missing = pytest.StashKey[str]()


def missing_servers() -> str | None:
    """None when every server of the native stack is installed; else the line saying what to install."""
    check = subprocess.run(STACK_CHECK, cwd=REPO, capture_output=True, text=True, check=False)
    if check.returncode == 0:
        return None
    return check.stdout.strip() or check.stderr.strip() or f"`python -m deploy.stack check` exited {check.returncode}"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path != INTEGRATION or os.environ.get("STACK_REQUIRED") == "1":
        return None
    reason = missing_servers()
    if reason is None:
        return None
    config.stash[_missing] = reason
    return True


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _missing in config.stash:
        terminalreporter.write_line(f"SKIPPED tests/integration (native stack not installed): {config.stash[_missing]}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only the integration directory was asked for and it is left out: that is the skip above, not "no tests".
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and _missing in session.config.stash:
        session.exitstatus = pytest.ExitCode.OK
