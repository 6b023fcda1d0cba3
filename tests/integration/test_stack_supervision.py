"""The stack's supervisor: a killed process comes back on its own, and `up` on a running stack changes nothing."""

import os
import signal

import httpx
import pytest

from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("component", ["gunicorn", "redis"])
def test_a_killed_component_is_restarted_by_the_supervisor(stack, component):
    killed = stack.pid(component)
    assert killed

    os.kill(killed, signal.SIGKILL)

    restarted = wait_until(lambda: stack.pid(component) not in (None, killed) and stack.pid(component), 30)
    assert restarted != killed
    wait_until(lambda: httpx.get(f"{stack.base_url}/readyz", timeout=15).status_code == 200, timeout_s=30)


def test_up_on_a_running_stack_is_harmless(stack):
    pids = {name: stack.pid(name) for name in ("postgres", "rabbitmq", "gunicorn", "nginx")}

    result = stack.run("up")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "already up" in result.stdout
    assert {name: stack.pid(name) for name in pids} == pids
    assert httpx.get(f"{stack.base_url}/healthz").status_code == 200
