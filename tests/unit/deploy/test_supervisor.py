"""The supervisor, on real short-lived processes: start in order, restart with a growing backoff, hold down,
escalate to SIGKILL, and stop a component's whole process group."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from deploy.stack.components import Component
from deploy.stack.config import CHILD_MARK
from deploy.stack.logs import logged_since_start
from deploy.stack.supervisor import Supervisor, failures_after, hold_down_marker, restart_delay_s
from tests.support import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:  # a zombie (exited, not yet reaped by whoever inherited it) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def supervisor_of(tmp_path):
    """Builds a Supervisor over the given components in tmp_path; stops whatever it still runs afterwards."""
    made = []

    def make(*components: Component, env: dict[str, str] | None = None) -> Supervisor:
        for directory in ("run", "log"):
            (tmp_path / directory).mkdir(exist_ok=True)
        sup = Supervisor(
            list(components), run_dir=tmp_path / "run", log_dir=tmp_path / "log", stack_dir=tmp_path, env=env
        )
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop_all()


def component(name: str, argv: list[str], **kwargs) -> Component:
    kwargs.setdefault("healthy", lambda: True)
    kwargs.setdefault("stop_timeout_s", 5)
    return Component(name=name, argv=argv, **kwargs)


def pid_in_file(sup: Supervisor, name: str) -> int | None:
    try:
        return int((sup.run_dir / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def test_restart_delay_doubles_while_a_component_keeps_dying_young_up_to_ten_seconds():
    failures, delays = 0, []
    for _ in range(6):
        failures = failures_after(failures, uptime_s=1)
        delays.append(restart_delay_s(failures))
    assert delays == [1, 2, 4, 8, 10, 10]


def test_a_run_longer_than_thirty_seconds_resets_the_backoff():
    assert failures_after(5, uptime_s=31) == 0
    assert restart_delay_s(0) == 0.5


def test_a_component_that_dies_is_started_again_after_its_backoff_with_a_new_pid_file(supervisor_of):
    sup = supervisor_of(component("dies", python("import sys, time; time.sleep(0.2); sys.exit(3)")))
    sup.tick()
    first = sup.procs["dies"]
    assert pid_in_file(sup, "dies") == first.pid
    first.wait(10)

    sup.tick()  # notices the death: no process, no pid file, a restart scheduled 1 s out
    assert "dies" not in sup.procs and pid_in_file(sup, "dies") is None
    assert sup.next_start["dies"] - time.monotonic() == pytest.approx(1, abs=0.3)
    sup.tick()
    assert "dies" not in sup.procs, "restarted before its backoff"

    wait_until(lambda: sup.tick() or "dies" in sup.procs, timeout_s=5, interval_s=0.05)
    second = sup.procs["dies"]
    assert second.pid != first.pid and pid_in_file(sup, "dies") == second.pid
    second.wait(10)
    sup.tick()  # the second quick death in a row doubles the delay
    assert sup.next_start["dies"] - time.monotonic() == pytest.approx(2, abs=0.3)


def test_a_held_down_component_is_stopped_and_stays_down_until_released(supervisor_of):
    sup = supervisor_of(component("sleeper", SLEEPER))
    sup.tick()
    pid = sup.procs["sleeper"].pid

    hold_down_marker(sup.run_dir, "sleeper").touch()
    sup.tick()
    assert not alive(pid)
    assert "sleeper" not in sup.procs and pid_in_file(sup, "sleeper") is None
    sup.tick()
    assert "sleeper" not in sup.procs, "a held component was restarted"

    hold_down_marker(sup.run_dir, "sleeper").unlink()
    sup.tick()
    assert alive(sup.procs["sleeper"].pid)


def test_a_component_that_ignores_its_stop_signal_is_killed_after_its_stop_timeout(supervisor_of):
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(60)"
    )
    sup = supervisor_of(component("stubborn", stubborn, stop_timeout_s=0.5))
    proc = sup.spawn(sup.components["stubborn"])
    wait_until(lambda: logged_since_start(sup.log_dir, "stubborn", b"armed"), timeout_s=10, interval_s=0.05)

    started = time.monotonic()
    sup.terminate("stubborn")

    assert 0.5 <= time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGKILL


def test_stopping_a_component_also_stops_the_processes_it_forked(supervisor_of, tmp_path):
    child_pid_file = tmp_path / "child.pid"
    forks = ["sh", "-c", f"sleep 60 & echo $! > {child_pid_file}; wait"]
    sup = supervisor_of(component("forks", forks, stop_signal=signal.SIGKILL))  # the shell dies, its child must too
    sup.spawn(sup.components["forks"])
    child = int(wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text().strip(), timeout_s=10))
    assert alive(child)

    sup.terminate("forks")

    wait_until(lambda: not alive(child), timeout_s=5)


def test_boot_starts_each_component_once_the_one_before_is_healthy_and_then_reports_up(supervisor_of, tmp_path):
    ready = tmp_path / "first-is-ready"
    first = component(
        "first",
        python(f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"),
        healthy=ready.exists,
    )
    once = component(
        "once",
        python(f"import pathlib, sys; sys.exit(0 if pathlib.Path({str(ready)!r}).exists() else 9)"),
        oneshot=True,
    )
    sup = supervisor_of(first, once)

    assert sup.boot() is True

    assert (sup.run_dir / "supervisor.state").read_text() == "up\n"
    assert set(sup.procs) == {"first"}, "a finished one-shot is not supervised"
    assert pid_in_file(sup, "once") is None


def test_boot_fails_naming_the_component_that_exited_and_its_log(supervisor_of):
    sup = supervisor_of(component("broken", python("import sys; sys.exit(4)"), healthy=lambda: False))

    assert sup.boot() is False

    state = (sup.run_dir / "supervisor.state").read_text()
    assert state.startswith("failed broken: exited with code 4; see ") and state.strip().endswith("broken.log")


def test_a_failing_after_healthy_step_fails_the_boot(supervisor_of):
    sup = supervisor_of(component("db", SLEEPER, after_healthy=lambda: "createdb items failed: no"))
    assert sup.boot() is False
    assert "failed db: createdb items failed: no" in (sup.run_dir / "supervisor.state").read_text()


def test_health_read_from_the_log_counts_only_what_was_written_since_the_last_start(supervisor_of):
    sup = supervisor_of(component("talker", python("print('worker ready.', flush=True)")))
    sup.spawn(sup.components["talker"]).wait(10)
    assert logged_since_start(sup.log_dir, "talker", b" ready.")

    sup.components["talker"].argv = python("pass")
    sup.spawn(sup.components["talker"]).wait(10)
    assert not logged_since_start(sup.log_dir, "talker", b" ready.")


def test_every_component_gets_the_common_environment_its_own_and_the_child_mark(supervisor_of, tmp_path):
    show = python(f"import os; print(os.environ['COMMON'], os.environ['OWN'], os.environ['{CHILD_MARK}'])")
    sup = supervisor_of(component("env", show, env={"OWN": "own"}), env={"COMMON": "common", "OWN": "overridden"})
    sup.spawn(sup.components["env"]).wait(10)
    assert f"common own {tmp_path}" in (sup.log_dir / "env.log").read_text()
    assert os.environ.get(CHILD_MARK) is None, "the mark is for children only"
