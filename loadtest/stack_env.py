"""Finding, starting and stopping the native stack (python -m deploy.stack) and reading the config it runs with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from deploy.stack import PORT_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
# Run with cwd=REPO, so that `-m deploy.stack` finds the package.
STACK_COMMAND = [sys.executable, "-m", "deploy.stack"]
STACK_PACKAGE = REPO / "deploy" / "stack" / "__main__.py"
# The load client is exempt from both rate-limit layers through this variable, never by editing a config.
LOADTEST_ALLOWLIST = "127.0.0.1/32"
_SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN", re.I)


def _port(name: str) -> str:
    return os.environ.get(name) or str(PORT_DEFAULTS[name])


def stack_dir() -> Path:
    return Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as written by `python -m deploy.stack up` (`set -a; . .stack/env`); comments and blanks
    skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values


def redact(env: dict[str, str]) -> dict[str, str]:
    """The config for the report: secrets and URL passwords replaced by '***'."""
    shown = {}
    for key, value in sorted(env.items()):
        if _SECRET_NAMES.search(key):
            shown[key] = "***" if value else ""
            continue
        parts = urlsplit(value) if "://" in value else None
        if parts and parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            value = urlunsplit(parts._replace(netloc=netloc))
        shown[key] = value
    return shown


@dataclass
class Stack:
    """What the load tool needs to know about a running native stack."""

    directory: Path
    env: dict[str, str] = field(default_factory=dict)  # .stack/env
    gunicorn_env: dict[str, str] = field(default_factory=dict)  # the live gunicorn's environment

    @property
    def http_url(self) -> str:
        return self.env.get("STACK_HTTP_URL") or f"http://127.0.0.1:{_port('STACK_HTTP_PORT')}"

    @property
    def web_url(self) -> str:
        return self.env.get("STACK_WEB_URL") or f"http://127.0.0.1:{_port('STACK_WEB_PORT')}"

    @property
    def database_direct_url(self) -> str | None:
        """PostgreSQL itself (STACK_PG_PORT), not PgBouncer: counting rows needs no pool slot."""
        return self.env.get("DATABASE_DIRECT_URL") or None

    @property
    def allowlist(self) -> str:
        return self.gunicorn_env.get("RATELIMIT_ALLOWLIST", self.env.get("RATELIMIT_ALLOWLIST", ""))


def find_stack() -> Stack | None:
    """The native stack described by $STACK_DIR/env, or None when it was never started here."""
    directory = stack_dir()
    env_file = directory / "env"
    if not env_file.exists():
        return None
    stack = Stack(directory=directory, env=read_env_file(env_file))
    stack.gunicorn_env = _process_env(directory / "run" / "gunicorn.pid")
    return stack


def _process_env(pid_file: Path) -> dict[str, str]:
    """The environment a running process was started with (/proc/PID/environ), {} when unreadable."""
    try:
        raw = Path(f"/proc/{int(pid_file.read_text())}/environ").read_bytes()
    except (OSError, ValueError):
        return {}
    return dict(entry.split("=", 1) for entry in raw.decode(errors="replace").split("\0") if "=" in entry)


def stack_is_up() -> bool:
    """`python -m deploy.stack status` exits 0 only when the supervisor and every component are alive."""
    if not STACK_PACKAGE.exists():
        return False
    result = subprocess.run(
        [*STACK_COMMAND, "status"], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
    )
    return result.returncode == 0


def start_stack(log_path: Path) -> None:
    """`python -m deploy.stack up` with the load client allow-listed; raises RuntimeError naming the log on failure."""
    if not STACK_PACKAGE.exists():
        raise RuntimeError("deploy/stack is missing: the native stack is not available here")
    env = {**os.environ, "RATELIMIT_ALLOWLIST": LOADTEST_ALLOWLIST}
    with open(log_path, "ab") as log:
        # up waits for every component's health check (RabbitMQ alone may take a minute on first start).
        result = subprocess.run(
            [*STACK_COMMAND, "up"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600
        )
    if result.returncode != 0:
        raise RuntimeError(f"deploy.stack up failed (exit {result.returncode}); see {log_path}")


def stop_stack(log_path: Path) -> int:
    with open(log_path, "ab") as log:
        return subprocess.run(
            [*STACK_COMMAND, "down"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=300
        ).returncode


def run_on_stack(start: bool, out_dir: Path, run: Callable[[], int]) -> int:
    """`run()` on the native stack; with `start`, the stack is started first if it is not up, and stopped after
    if this call started it (its log in out_dir/stack.log)."""
    started_here = False
    if start and not stack_is_up():
        out_dir.mkdir(parents=True, exist_ok=True)
        start_stack(out_dir / "stack.log")
        started_here = True
    try:
        return run()
    finally:
        if started_here:
            stop_stack(out_dir / "stack.log")
