"""The commands of `python -m deploy.stack` (see USAGE)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from deploy.stack import binaries, components, prepare
from deploy.stack.components import Component
from deploy.stack.config import PORT_NAMES, REPO, VENV_BIN, Config, StackError, app_env
from deploy.stack.logs import log_tail, say
from deploy.stack.processes import pid_file, read_pid, stack_processes, stop_strays, supervisor_pid
from deploy.stack.supervisor import Supervisor, hold_down_marker

USAGE = """usage: python -m deploy.stack up | down | status | stop NAME | start NAME | check

  up          start every component in dependency order, each health-checked, under one supervisor
  down        stop exactly what `up` started, in reverse order, and verify no process is left
  status      list components, pids and whether they are alive
  stop NAME   hold one component down (the supervisor will not restart it)
  start NAME  let the supervisor start it again, and wait until it is healthy
  check       exit 0 when every server binary is installed, else print the one line saying what to install

Run from the repository root. State lives in $STACK_DIR (default <repo>/.stack): run/NAME.pid, log/NAME.log,
data/, conf/ and env."""


class Stack:
    """One command's view of the stack: its config and its component table, both built once per command."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.components = components.build(cfg)
        self.supervised = components.supervised(self.components)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def processes(self) -> set[int]:
        return stack_processes(self.cfg.stack_dir, self.cfg.run, self.session_binaries())

    def session_binaries(self) -> dict[str, str]:
        return {c.name: c.argv[0] for c in self.supervised if c.argv[0]}

    def supervisor_pid(self) -> int | None:
        return supervisor_pid(self.cfg.run)

    def pid(self, name: str) -> int | None:
        return read_pid(self.cfg.run, name)


def ports_in_use(cfg: Config) -> list[str]:
    busy = []
    for name in PORT_NAMES:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", cfg.ports[name]))
            except OSError:
                busy.append(f"{name}={cfg.ports[name]}")
    return busy


def cmd_check(stack: Stack) -> int:
    hint = binaries.install_hint(stack.cfg.binaries)
    if hint:
        print(hint)
        return 1
    return 0


def cmd_up(stack: Stack) -> int:
    cfg = stack.cfg
    if stack.supervisor_pid():
        print(f"stack is already up (supervisor pid {stack.supervisor_pid()})")
        cmd_status(stack)
        return 0
    if cmd_check(stack):
        return 1
    if not all(os.access(VENV_BIN / name, os.X_OK) for name in ("python", "gunicorn", "celery")):
        raise StackError(f"{VENV_BIN} lacks python, gunicorn or celery; run `make install` first")
    data_dirs = [cfg.data / name for name in ("redis", "redis-state", "rabbitmq", "nginx")]
    for directory in (cfg.run, cfg.log, *data_dirs):
        directory.mkdir(parents=True, exist_ok=True)
    (cfg.run / "prometheus").mkdir(parents=True, exist_ok=True)
    cfg.stack_dir.chmod(0o755)
    prepare.check_service_user_can_reach(cfg.data / "postgres")
    stop_strays(cfg.stack_dir, cfg.run, stack.session_binaries())
    busy = ports_in_use(cfg)
    if busy:
        raise StackError(f"port(s) already in use by another process: {', '.join(busy)}; choose free ones")
    for marker in cfg.run.glob("*.down"):  # `up` means everything up
        marker.unlink()
    (cfg.run / "supervisor.state").unlink(missing_ok=True)
    prepare.render_config(cfg)
    prepare.init_postgres(cfg)
    prepare.init_replica_dir(cfg)
    prepare.write_env_file(cfg)

    with open(cfg.log / "supervisor.log", "ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "deploy.stack", "_supervise"],
            cwd=REPO,
            env={**os.environ, "STACK_DIR": str(cfg.stack_dir)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: outlives this command and its terminal
        )
    shown = ""
    while True:
        try:
            state = (cfg.run / "supervisor.state").read_text().strip()
        except OSError:
            state = ""
        if state != shown:
            say(state)
            shown = state
        if state == "up":
            break
        if state.startswith("failed") or supervisor.poll() is not None:
            name = state.split()[1].rstrip(":") if state.startswith("failed") else "supervisor"
            print(f"stack: {state or 'the supervisor died'}\n--- last lines of {cfg.log / name}.log:")
            print(log_tail(cfg.log, name))
            supervisor.wait(300)  # it stops what it started before exiting
            return 1
        time.sleep(0.2)
    http_ = cfg.ports["STACK_HTTP_PORT"]
    if components.http_status(http_, "/healthz") != 200:
        print(f"stack: warning: GET /healthz through Nginx did not answer 200; see {cfg.log}/nginx.log")
    print("\nThe stack is up:")
    for comp in stack.supervised:
        print(f"  {comp.name:<10} pid {stack.pid(comp.name) or '-':<8} {comp.address}")
    print(f"\nPublic URL: http://127.0.0.1:{http_}/  (try: curl -i http://127.0.0.1:{http_}/items)")
    print(f"Logs: {cfg.log}/   Environment for tools: {cfg.stack_dir / 'env'}   Stop: python -m deploy.stack down")
    return 0


def cmd_down(stack: Stack) -> int:
    pid = stack.supervisor_pid()
    if pid:
        say(f"stopping the supervisor (pid {pid}); it stops the components in reverse order")
        os.kill(pid, signal.SIGTERM)
        budget_s = sum(c.stop_timeout_s for c in stack.supervised) + 10
        deadline = time.monotonic() + budget_s
        while stack.supervisor_pid() and time.monotonic() < deadline:
            time.sleep(0.2)
        if stack.supervisor_pid():
            say(f"supervisor did not exit within {budget_s:g} s; killing it")
            os.kill(pid, signal.SIGKILL)
    stop_strays(stack.cfg.stack_dir, stack.cfg.run, stack.session_binaries())
    for comp in stack.supervised:
        pid_file(stack.cfg.run, comp.name).unlink(missing_ok=True)
    pid_file(stack.cfg.run, "supervisor").unlink(missing_ok=True)
    left = stack.processes()
    if left:
        print(f"stack: processes still running: {sorted(left)}")
        return 1
    say("stack is down; no process of it is left")
    return 0


def cmd_status(stack: Stack) -> int:
    sup = stack.supervisor_pid()
    print(f"supervisor  {'pid ' + str(sup) if sup else 'not running'}  ({stack.cfg.stack_dir})")
    all_up = bool(sup)
    for comp in stack.supervised:
        pid, held = stack.pid(comp.name), hold_down_marker(stack.cfg.run, comp.name).exists()
        state = "up" if pid else ("held down" if held else "down")
        all_up = all_up and bool(pid)
        print(f"  {comp.name:<10} {state:<10} pid {pid or '-':<8} {comp.address}")
    return 0 if all_up else 3


def cmd_stop(stack: Stack, name: str) -> int:
    comp = supervised_component(stack, name)
    hold_down_marker(stack.cfg.run, name).touch()
    deadline = time.monotonic() + comp.stop_timeout_s + 10
    while stack.pid(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if stack.pid(name):
        print(f"stack: {name} is still running after {comp.stop_timeout_s + 10:g} s")
        return 1
    say(f"{name} is stopped and held down")
    return 0


def cmd_start(stack: Stack, name: str) -> int:
    comp = supervised_component(stack, name)
    hold_down_marker(stack.cfg.run, name).unlink(missing_ok=True)
    deadline = time.monotonic() + comp.start_timeout_s + 10
    while time.monotonic() < deadline:
        if stack.pid(name) and comp.healthy():
            say(f"{name} is up (pid {stack.pid(name)})")
            return 0
        time.sleep(0.2)
    print(f"stack: {name} is not healthy after {comp.start_timeout_s + 10:g} s; see {stack.cfg.log / name}.log")
    return 1


def supervised_component(stack: Stack, name: str) -> Component:
    if name not in {c.name for c in stack.supervised}:
        raise StackError(f"unknown component {name!r}; one of: {', '.join(c.name for c in stack.supervised)}")
    if not stack.supervisor_pid():
        raise StackError("the stack is not up (python -m deploy.stack up)")
    return stack.component(name)


def cmd_supervise(stack: Stack) -> int:
    cfg = stack.cfg
    supervisor = Supervisor(
        stack.components, run_dir=cfg.run, log_dir=cfg.log, stack_dir=cfg.stack_dir, env=app_env(cfg)
    )
    return supervisor.run()


COMMANDS: dict[str, Callable[..., int]] = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "check": cmd_check,
    "stop": cmd_stop,
    "start": cmd_start,
    "_supervise": cmd_supervise,  # what `up` runs detached
}


def main(args: list[str]) -> int:
    """`args` without the program name. Exit codes: 0 done, 1 failed, 2 usage, 3 `status` with something down."""
    takes_name = args[:1] in (["stop"], ["start"])
    if len(args) != (2 if takes_name else 1) or args[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        return COMMANDS[args[0]](Stack(Config.from_environ()), *args[1:])
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
