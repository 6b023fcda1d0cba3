"""The stack's processes as the system sees them: pid files, the service account, and finding strays in /proc."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import time
from pathlib import Path

from deploy.stack.config import CHILD_MARK, SERVICE_USER
from deploy.stack.logs import say


def service_user_kwargs() -> dict:
    """Popen arguments that run a process as SERVICE_USER when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(SERVICE_USER)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def chown_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVICE_USER)
        os.chown(path, account.pw_uid, account.pw_gid)


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def read_pid(run_dir: Path, name: str) -> int | None:
    """The pid in run/NAME.pid when that process is alive, else None."""
    try:
        pid = int(pid_file(run_dir, name).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def supervisor_pid(run_dir: Path) -> int | None:
    pid = read_pid(run_dir, "supervisor")
    try:  # a recycled pid is not our supervisor
        return pid if pid and b"_supervise" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except OSError:
        return None


def session_of(pid: int) -> int | None:
    try:  # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def stack_processes(stack_dir: Path, run_dir: Path, binaries_by_name: dict[str, str]) -> set[int]:
    """Every live process of this stack. Each carries CHILD_MARK in its environment, except where a server
    overwrites its environment with its process title (Nginx, Redis): those are found by session instead, as
    each component runs in its own session whose id is the pid in run/NAME.pid, checked against the binary
    (`binaries_by_name`: component name -> argv[0]) so that a recycled pid is never taken for ours."""
    binary_of_session = {}
    for name, binary in binaries_by_name.items():
        with contextlib.suppress(OSError, ValueError):
            binary_of_session[int(pid_file(run_dir, name).read_text())] = os.path.realpath(binary)
    mark, found = f"{CHILD_MARK}={stack_dir}".encode(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            session = session_of(pid)
            ours_by_session = session is not None and os.readlink(entry / "exe") == binary_of_session.get(session)
            if ours_by_session or mark in (entry / "environ").read_bytes().split(b"\0"):
                found.add(pid)
    return found


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_strays(stack_dir: Path, run_dir: Path, binaries_by_name: dict[str, str], grace_s: float = 10) -> None:
    """Processes of this stack that no supervisor owns (it was killed): TERM to each session leader (the
    component's main process), then KILL whatever is left after grace_s."""

    def strays() -> set[int]:
        return stack_processes(stack_dir, run_dir, binaries_by_name)

    pids = strays()
    if not pids:
        return
    say(f"stopping {len(pids)} stray process(es) of a previous run: {sorted(pids)}")
    for pid in pids:
        if session_of(pid) == pid:
            kill_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while strays() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in strays():
        kill_pid(pid, signal.SIGKILL)
