"""What a result is worth knowing alongside it: machine, tool and server versions, the gunicorn config in force."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from loadtest.servers import GUNICORN_CONF, gunicorn_workers
from loadtest.stack_env import REPO

GUNICORN_SETTINGS_SHOWN = (
    "workers",
    "worker_class",
    "threads",
    "backlog",
    "keepalive",
    "timeout",
    "graceful_timeout",
    "max_requests",
    "max_requests_jitter",
    "accesslog",
)


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _dpkg_version(package: str) -> str | None:
    return _output(["dpkg-query", "-W", "-f=${Version}", package]) or None if shutil.which("dpkg-query") else None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    wrk = _output(["wrk", "-v"]).splitlines()
    found["wrk"] = wrk[0].split(" [")[0].removeprefix("wrk ") if wrk and wrk[0].startswith("wrk") else None
    # hey has no --version; the package manager knows.
    found["hey"] = _dpkg_version("hey")
    nginx_binary = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    nginx = re.search(r"nginx/(\S+)", _output([nginx_binary, "-v"]) if nginx_binary else "")
    found["nginx"] = nginx[1] if nginx else None
    for package in (
        "Django",
        "djangorestframework",
        "gunicorn",
        "uvicorn",
        "uvicorn-worker",
        "uvloop",
        "httptools",
        "celery",
        "matplotlib",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package.lower()] = metadata.version(package)
    return found


def machine() -> dict:
    info: dict = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
    }
    with contextlib.suppress(OSError):
        info["loadavg"] = os.getloadavg()
    with contextlib.suppress(OSError):
        model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        info["cpu_model"] = model[1] if model else None
    with contextlib.suppress(OSError):
        total = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["memory_mb"] = int(total[1]) // 1024 if total else None
    return info


# How the service reads its environment: env_str("NAME"…) in project/env.py's helpers, os.environ.get("NAME")
# in the gunicorn config (servers.GUNICORN_CONF). Scanning for these keeps the report's config in step with the code.
_ENV_READ = re.compile(r"""(?:env_[a-z]+\(|environ\.get\(|getenv\(|environ\[)\s*["']([A-Z][A-Z0-9_]*)["']""")
_ENV_SOURCES = (REPO / "project", REPO / "app", GUNICORN_CONF)


def env_names_read() -> set[str]:
    """Every environment variable the app, its settings and gunicorn.conf.py read."""
    names: set[str] = set()
    for path in _ENV_SOURCES:
        for file in [path] if path.is_file() else path.rglob("*.py"):
            with contextlib.suppress(OSError):
                names.update(_ENV_READ.findall(file.read_text()))
    return names


def config_env(env: dict[str, str], also: Iterable[str] = frozenset()) -> dict:
    """The part of a process environment the service reads: set values, and names left to their defaults."""
    read = env_names_read()
    return {
        "set": {name: env[name] for name in sorted(read | set(also)) if name in env},
        "unset_defaults_apply": sorted(name for name in read if name not in env),
    }


def gunicorn_config(env: dict[str, str]) -> dict[str, str]:
    """`gunicorn --print-config` under the given environment: the settings actually in force."""
    gunicorn = REPO / ".venv" / "bin" / "gunicorn"
    argv = [
        str(gunicorn) if gunicorn.exists() else "gunicorn",
        "-c",
        str(GUNICORN_CONF),
        "--print-config",
        "project.asgi:application",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=REPO, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    settings = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in GUNICORN_SETTINGS_SHOWN:
            settings[key.strip()] = value.strip()
    return settings


def live_worker_count(pid_file: Path) -> int | None:
    """Children of the running gunicorn master: the workers actually serving."""
    try:
        workers = gunicorn_workers(int(pid_file.read_text()))
    except (OSError, ValueError):
        return None
    return None if workers is None else len(workers)
