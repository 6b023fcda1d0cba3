"""/readyz through Nginx names the dependency that is down, and recovers when it is back."""

import httpx
import pytest

from tests.support import wait_until

pytestmark = pytest.mark.integration


def _not_ready(stack) -> httpx.Response | None:
    response = httpx.get(f"{stack.base_url}/readyz", timeout=15)
    return response if response.status_code == 503 else None


@pytest.mark.parametrize(
    ("component", "check"),
    [("redis", "cache"), ("redis-state", "state"), ("rabbitmq", "broker"), ("pgbouncer", "database")],
)
def test_readyz_is_503_naming_the_dependency_that_is_down_and_200_once_it_is_back(stack, component, check):
    stack.stop(component)
    try:
        assert "held down" in stack.run("status").stdout
        # Each process reuses its last answer for READYZ_CACHE_S (1 s): the 503 comes within about that.
        response = wait_until(lambda: _not_ready(stack), timeout_s=10)

        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["checks"][check]["ok"] is False
        assert body["checks"][check]["error"]
        assert "127.0.0.1" not in response.text  # why it is down (with addresses) goes to the log only
        # The replica is reached through PgBouncer too; it is reported, but is not why /readyz is 503.
        also_down = ["replica"] if component == "pgbouncer" else []
        assert [name for name, result in body["checks"].items() if not result["ok"]] == [check, *also_down]
        assert body["detail"] == f"Not ready: {check} unavailable."
    finally:
        stack.start(component)

    wait_until(lambda: httpx.get(f"{stack.base_url}/readyz", timeout=15).status_code == 200, timeout_s=30)
