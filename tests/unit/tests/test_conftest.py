"""`make test` on a machine with only Python: the unit tests run, the integration directory is left out with one
line naming what to install, and the run passes; under STACK_REQUIRED=1 (CI) the same machine fails."""

import os
import subprocess
import sys

from tests.support import REPO

# A unit test that needs nothing, so that the subprocess run stays short; the collection is the whole tree.
ONE_TEST = "test_a_missing_server_is_named_with_the_packages_to_install"


def run_pytest(*args: str, **env: str) -> subprocess.CompletedProcess:
    hidden = {**os.environ, "STACK_BIN_PATH": "/nonexistent", **env}  # no server binary anywhere
    if "STACK_REQUIRED" not in env:
        hidden.pop("STACK_REQUIRED", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        env=hidden,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_missing_server_is_named_with_the_packages_to_install():
    check = subprocess.run(
        [sys.executable, "-m", "deploy.stack", "check"],
        cwd=REPO,
        env={**os.environ, "STACK_BIN_PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 1
    assert check.stdout.startswith("missing ") and "postgres" in check.stdout and "nginx" in check.stdout
    assert "make system-deps" in check.stdout


def test_make_test_passes_without_the_servers_and_says_why_integration_was_left_out():
    run = run_pytest("-k", ONE_TEST)
    assert run.returncode == 0, run.stdout + run.stderr
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED tests/integration")]
    assert len(skipped) == 1, run.stdout
    assert "make system-deps" in skipped[0] and "pgbouncer" in skipped[0]
    assert "Traceback" not in run.stdout + run.stderr


def test_stack_required_fails_the_run_without_the_servers():
    run = run_pytest("-k", ONE_TEST, STACK_REQUIRED="1")
    assert run.returncode != 0
    assert "native stack not installed (STACK_REQUIRED=1)" in run.stdout + run.stderr
    assert "make system-deps" in run.stdout + run.stderr


def test_asking_for_the_integration_tests_without_the_servers_fails_with_the_reason():
    run = run_pytest("tests/integration")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "native stack not installed (the integration tests were asked for)" in run.stdout + run.stderr
