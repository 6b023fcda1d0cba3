"""Integration fixtures: the native stack (python -m deploy.stack) started once per session on free loopback ports."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.stack import PORT_NAMES
from tests.support import free_ports, wait_until  # noqa: F401  (fixtures below use them)

REPO = Path(__file__).resolve().parents[2]
STACK_COMMAND = [sys.executable, "-m", "deploy.stack"]  # run from REPO
UP_TIMEOUT_S = 300  # the stack gives each component its own start timeout; this only stops a hang


def require_servers() -> None:
    """Reached only when this directory is collected: with the servers installed, with STACK_REQUIRED=1 (CI), or
    named on the command line. Without the servers, any of these fails the run with the line saying why (a skip
    raised while pytest loads a conftest is an error, not a skip; tests/conftest.py leaves the directory out of
    a plain `make test` instead)."""
    from tests.conftest import missing_servers

    reason = missing_servers()
    if reason is not None:
        why = "STACK_REQUIRED=1" if os.environ.get("STACK_REQUIRED") == "1" else "the integration tests were asked for"
        pytest.exit(f"native stack not installed ({why}): {reason}", returncode=pytest.ExitCode.USAGE_ERROR)


require_servers()


@dataclass
class Stack:
    stack_dir: Path
    env: dict[str, str]
    base_url: str  # through Nginx, as a client sees it
    web_url: str  # gunicorn directly, behind Nginx
    read_url: str  # the read pool directly: where Nginx sends GET and HEAD /items

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*STACK_COMMAND, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def stop(self, name: str) -> None:
        """Hold a component down (the supervisor leaves it down until start)."""
        result = self.run("stop", name)
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self, name: str) -> None:
        """Release a held component and wait until it is healthy again."""
        result = self.run("start", name)
        assert result.returncode == 0, result.stdout + result.stderr

    def wait_healthy(self, name: str) -> None:
        """Wait until a component is up and healthy again (`start` on a running component only waits)."""
        self.start(name)

    def pid(self, name: str) -> int | None:
        try:
            return int((self.stack_dir / "run" / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def psql(self, sql: str, *, port: int | None = None, dbname: str | None = None) -> list[tuple]:
        """Run SQL with psql against PostgreSQL directly (or `port`, e.g. PgBouncer's console). Rows as tuples:
        integers as int, everything else as text (NULL as "")."""
        result = subprocess.run(
            [
                str(Path(self.env["STACK_PG_BIN"]) / "psql"),
                "-X",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(port or self.env["STACK_PG_PORT"]),
                "-U",
                self.env["POSTGRES_USER"],
                "-d",
                dbname or self.env["POSTGRES_DB"],
                "-c",
                sql,
            ],
            env={**self.env, "PGPASSWORD": self.env["POSTGRES_PASSWORD"], "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"psql failed: {result.stderr}"
        return [tuple(map(_typed, line.split("\t"))) for line in result.stdout.splitlines() if line]


def _typed(field: str) -> int | str:
    return int(field) if field.lstrip("-").isdigit() else field


def running_in(state_dir: Path, ports: list[int]) -> list[str]:
    """What is still alive of a stack, judged from outside deploy.stack: processes naming the state dir in their
    command line, and listeners on the stack's ports."""
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in cmdline:
                leftovers.append(f"pid {entry.name}: {cmdline.strip()}")
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                leftovers.append(f"something listens on 127.0.0.1:{port}")
    return leftovers


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    # Not under pytest's tmp dir: that is mode 0700, and PostgreSQL runs as another user when we are root.
    state_dir = Path(tempfile.mkdtemp(prefix="items-stack-"))
    state_dir.chmod(0o755)
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    env = {
        **os.environ,
        "STACK_DIR": str(state_dir),
        **{name: str(number) for name, number in ports.items()},
        "RATELIMIT_ALLOWLIST": os.environ.get("RATELIMIT_ALLOWLIST", "127.0.0.1/32"),
        "WEB_CONCURRENCY": "2",  # several workers, whatever the core count: /metrics must sum them all
        # Short, so that tests/integration/test_read_replica.py sees a paused replica past it in seconds.
        "REPLICA_MAX_LAG_S": "2",
    }
    stack = Stack(
        stack_dir=state_dir,
        env=env,
        base_url=f"http://127.0.0.1:{ports['STACK_HTTP_PORT']}",
        web_url=f"http://127.0.0.1:{ports['STACK_WEB_PORT']}",
        read_url=f"http://127.0.0.1:{ports['STACK_WEB_READ_PORT']}",
    )
    up = stack.run("up", timeout_s=UP_TIMEOUT_S)
    if up.returncode:
        stack.run("down")
        pytest.fail(f"deploy.stack up failed (state kept in {state_dir}):\n{up.stdout}{up.stderr}", pytrace=False)
    # How the stack says it is reached (DATABASE_URL, BROKER_URL, STACK_PG_BIN, ...) joins the env the tests
    # use, e.g. to run manage.py against the stack.
    for line in (state_dir / "env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            stack.env[key] = value

    yield stack

    down = stack.run("down", timeout_s=300)
    leftovers = running_in(state_dir, list(ports.values()))
    if request.session.testsfailed == 0 and not leftovers and not os.environ.get("STACK_KEEP"):
        shutil.rmtree(state_dir, ignore_errors=True)
    assert down.returncode == 0, f"deploy.stack down failed:\n{down.stdout}{down.stderr}"
    assert not leftovers, "deploy.stack down left processes behind:\n" + "\n".join(leftovers)
