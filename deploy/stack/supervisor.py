"""The supervisor: starts the components in order, each health-checked, then restarts any that dies (like
systemd's Restart=always) with a backoff, except those held down by a run/NAME.down marker. SIGTERM stops
everything in reverse order. It runs detached (`python -m deploy.stack _supervise`, started by `up`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from deploy.stack.components import Component
from deploy.stack.config import CHILD_MARK
from deploy.stack.logs import START_MARKER, say
from deploy.stack.processes import kill_group, pid_file, service_user_kwargs

# Restart backoff while a component keeps dying young: 1 s, 2 s, 4 s, 8 s, then 10 s; a run of 30 s resets it.
BACKOFF_BASE_S, BACKOFF_MAX_S, BACKOFF_RESET_AFTER_S = 0.5, 10.0, 30.0


def failures_after(previous: int, uptime_s: float) -> int:
    """The count of quick deaths in a row, after one that came `uptime_s` after its start."""
    return 0 if uptime_s > BACKOFF_RESET_AFTER_S else previous + 1


def restart_delay_s(failures: int) -> float:
    return min(BACKOFF_BASE_S * 2**failures, BACKOFF_MAX_S)


def hold_down_marker(run_dir: Path, name: str) -> Path:
    """While this file exists the supervisor keeps NAME stopped (`stop NAME` creates it, `start NAME` removes it)."""
    return run_dir / f"{name}.down"


def write_state(run_dir: Path, state: str) -> None:
    """The boot progress `up` shows: "starting NAME", "failed NAME: why", then "up"."""
    say(state)
    tmp = run_dir / "supervisor.state.tmp"
    tmp.write_text(state + "\n")
    tmp.replace(run_dir / "supervisor.state")  # atomic: `up` never reads half a line


class Supervisor:
    def __init__(
        self,
        components: list[Component],
        *,
        run_dir: Path,
        log_dir: Path,
        stack_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.components = {c.name: c for c in components}
        self.run_dir, self.log_dir, self.stack_dir = run_dir, log_dir, stack_dir
        self.env = env or {}  # every component gets it, under its own `env`
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.next_start: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.stopping = False

    @property
    def supervised(self) -> list[Component]:
        return [c for c in self.components.values() if not c.oneshot]

    def spawn(self, comp: Component) -> subprocess.Popen:
        with open(self.log_dir / f"{comp.name}.log", "ab", buffering=0) as log:
            log.write(b"\n" + START_MARKER % comp.name.encode() + f" at {time.ctime()} ===\n".encode())
            env = {**os.environ, **self.env, **comp.env, CHILD_MARK: str(self.stack_dir)}
            if comp.as_service_user:
                env["HOME"] = str(comp.cwd)
            proc = subprocess.Popen(
                comp.argv,
                cwd=comp.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopping it reaches every child it forked
                **(service_user_kwargs() if comp.as_service_user else {}),
            )
        self.procs[comp.name], self.started_at[comp.name] = proc, time.monotonic()
        if not comp.oneshot:
            pid_file(self.run_dir, comp.name).write_text(f"{proc.pid}\n")
        say(f"started {comp.name} (pid {proc.pid})")
        return proc

    def terminate(self, name: str) -> None:
        """Graceful stop signal, then SIGKILL after the component's timeout; stragglers in its group go too."""
        proc, comp = self.procs.pop(name, None), self.components[name]
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(comp.stop_signal)
            try:
                proc.wait(comp.stop_timeout_s)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within {comp.stop_timeout_s:g} s; killing it")
        kill_group(proc.pid)
        proc.wait()
        pid_file(self.run_dir, name).unlink(missing_ok=True)
        say(f"stopped {name}")

    def wait_healthy(self, comp: Component, proc: subprocess.Popen) -> str | None:
        """None once healthy (a one-shot: once it exited 0); else why not."""
        deadline = time.monotonic() + comp.start_timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if proc.poll() is not None:
                return None if comp.oneshot and proc.returncode == 0 else f"exited with code {proc.returncode}"
            if not comp.oneshot and comp.healthy():
                return None
            time.sleep(0.25)
        return "stack is stopping" if self.stopping else f"not healthy within {comp.start_timeout_s:g} s"

    def boot(self) -> bool:
        for comp in self.components.values():
            write_state(self.run_dir, f"starting {comp.name}")
            error = self.wait_healthy(comp, self.spawn(comp))
            if error is None and comp.after_healthy:
                error = comp.after_healthy()
            if error:
                write_state(self.run_dir, f"failed {comp.name}: {error}; see {self.log_dir / comp.name}.log")
                return False
            if comp.oneshot:
                del self.procs[comp.name]  # it exited 0; nothing to supervise
            say(f"{comp.name} {'finished' if comp.oneshot else 'is healthy'}")
        write_state(self.run_dir, "up")
        return True

    def tick(self) -> None:
        """One pass over the supervised components: hold down, restart later, or start again when due."""
        for comp in self.supervised:
            proc, held = self.procs.get(comp.name), hold_down_marker(self.run_dir, comp.name).exists()
            if proc and held:
                self.terminate(comp.name)
                say(f"{comp.name} is held down (`python -m deploy.stack start {comp.name}` releases it)")
            elif proc and proc.poll() is not None:
                self.restart_later(comp, proc)
            elif not proc and not held and time.monotonic() >= self.next_start.get(comp.name, 0):
                self.spawn(comp)

    def supervise(self, interval_s: float = 0.2) -> None:
        while not self.stopping:
            self.tick()
            time.sleep(interval_s)

    def restart_later(self, comp: Component, proc: subprocess.Popen) -> None:
        kill_group(proc.pid)  # like systemd's KillMode=control-group: orphaned workers would hold the port
        del self.procs[comp.name]
        pid_file(self.run_dir, comp.name).unlink(missing_ok=True)
        uptime_s = time.monotonic() - self.started_at[comp.name]
        self.failures[comp.name] = failures_after(self.failures.get(comp.name, 0), uptime_s)
        delay_s = restart_delay_s(self.failures[comp.name])
        self.next_start[comp.name] = time.monotonic() + delay_s
        say(f"{comp.name} exited with code {proc.returncode} after {uptime_s:.1f} s; restarting in {delay_s:g} s")

    def stop_all(self) -> None:
        for name in reversed(self.components):  # a hung migration too, when the boot failed on it
            self.terminate(name)

    def run(self) -> int:
        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        pid_file(self.run_dir, "supervisor").write_text(f"{os.getpid()}\n")
        ok = self.boot()
        if ok:
            self.supervise()
        self.stop_all()
        pid_file(self.run_dir, "supervisor").unlink(missing_ok=True)
        say("supervisor exits")
        return 0 if ok else 1
