"""Finding the server binaries of the stack (searched on call, never at import)."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Mapping

APT_PACKAGES = "postgresql pgbouncer redis-server rabbitmq-server nginx"


def find_binary(name: str, *candidates: str, bin_path: str | None = None, path: str = "") -> str | None:
    """`bin_path` (STACK_BIN_PATH, colon-separated) replaces the default search, e.g. for servers installed
    outside the distribution's directories; otherwise the first executable candidate, else PATH plus the sbin
    directories."""
    if bin_path is not None:
        return shutil.which(name, path=bin_path)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name, path=path + ":/usr/sbin:/sbin")


def postgres_bin_dirs() -> list[str]:
    """Debian keeps the PostgreSQL server tools out of PATH, one directory per major version: newest first."""
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True)


def find_all(bin_path: str | None, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Every binary the stack runs: name -> path, None when it is not installed."""
    path = environ.get("PATH", "")

    def pg_bin(name: str) -> str | None:
        return find_binary(name, *(f"{d}/{name}" for d in postgres_bin_dirs()), bin_path=bin_path, path=path)

    def plain(name: str, *candidates: str) -> str | None:
        return find_binary(name, *candidates, bin_path=bin_path, path=path)

    return {
        "initdb": pg_bin("initdb"),
        "postgres": pg_bin("postgres"),
        "pg_isready": pg_bin("pg_isready"),
        "createdb": pg_bin("createdb"),
        "psql": pg_bin("psql"),
        "pgbouncer": plain("pgbouncer"),
        "redis-server": plain("redis-server"),
        # Debian's /usr/sbin/rabbitmq-server is a wrapper that su's to the system account and drops our env.
        "rabbitmq-server": plain("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server"),
        "epmd": plain("epmd"),
        "nginx": plain("nginx"),
    }


def missing(binaries: Mapping[str, str | None]) -> list[str]:
    return [name for name, found in binaries.items() if not found]


def install_hint(binaries: Mapping[str, str | None]) -> str | None:
    """The one line saying what to install, or None when nothing is missing."""
    absent = missing(binaries)
    if not absent:
        return None
    return f"missing {', '.join(absent)}: apt-get install {APT_PACKAGES} (or: make system-deps)"
