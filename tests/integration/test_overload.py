"""Overload protection on the real stack: queue-time shedding, backpressure from the real items queue, probes
never shed, everything counted in /metrics."""

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from loadtest.servers import start_gunicorn
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample of `name{labels}` (labels exactly as exposed, e.g. 'reason="queue_time"'), 0 if absent."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def waited(seconds: float) -> dict[str, str]:
    return {"X-Request-Start": f"t={time.time() - seconds:.3f}"}


def test_a_request_that_already_waited_too_long_is_shed_with_503_and_counted(stack):
    before = metric(stack.web_url, "items_shed_total", 'reason="queue_time"')
    body = {"name": f"waited-too-long-{uuid.uuid4()}"}  # a POST: a cache hit would be answered before the shedder

    response = httpx.post(f"{stack.web_url}/items", json=body, headers=waited(10))

    assert response.status_code == 503
    assert response.json()["error"] == "overloaded"
    assert response.headers["Retry-After"] == "1"
    assert metric(stack.web_url, "items_shed_total", 'reason="queue_time"') == before + 1
    assert httpx.post(f"{stack.web_url}/items", json=body, headers=waited(0.01)).status_code == 202
    time.sleep(1)
    assert stack.psql(f"SELECT count(*) FROM items WHERE name = '{body['name']}'") == [(1,)]  # the shed one: never


def test_a_cache_hit_is_answered_even_when_its_request_waited_too_long(stack):
    url = f"{stack.web_url}/items?limit=5"
    httpx.get(url)  # fills the app cache
    assert httpx.get(url, headers=waited(10)).status_code == 200  # the fast path is in front of the shedder


def test_health_and_metrics_are_never_shed_however_long_they_waited(stack):
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{stack.web_url}{probe}", headers=waited(60), timeout=10).status_code == 200


def test_a_client_cannot_forge_x_request_start_through_nginx(stack):
    # Nginx sets the header itself, so an old value from a client never gets that client (or anyone) shed.
    response = httpx.get(f"{stack.base_url}/items?limit=3", headers=waited(60))
    assert response.status_code == 200


def test_shedder_gauges_are_exposed(stack):
    assert metric(stack.web_url, "items_shed_limit") >= 2  # at least the floor, summed over two workers


@pytest.fixture
def low_watermark_web(stack, tmp_path: Path):
    """A second app gunicorn on the stack's environment with tiny watermarks (the stack's own keeps its
    defaults, so other tests never meet backpressure)."""
    server = start_gunicorn(
        "web with low watermarks",
        "project.asgi:application",
        base_env=stack.env,
        work_dir=tmp_path / "web",
        extra_env={
            "WEB_CONCURRENCY": "1",
            "BACKPRESSURE_LOW": "5",
            "BACKPRESSURE_HIGH": "15",
            "BACKPRESSURE_MAX_DELAY_MS": "20",
            "GUNICORN_ACCESS_LOG": "",
        },
        ready_path="/healthz",
    )
    try:
        yield server.url
    finally:
        server.stop()


def test_posts_meet_a_growing_delay_then_503_queue_full_while_the_worker_is_down_and_pass_after_it_drains(
    stack, low_watermark_web
):
    url = low_watermark_web
    accepted: list[str] = []
    refused = None
    stack.stop("celery")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in range(60):
                response = client.post("/items", json={"name": f"bp-{uuid.uuid4().hex[:8]}-{n}"})
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                    time.sleep(0.11)  # let the next request see a fresh depth sample
                    continue
                refused = response
                break
        assert refused is not None, f"60 POSTs accepted with the worker down: {len(accepted)}"
        assert refused.status_code == 503
        assert refused.json()["error"] == "queue_full"
        assert int(refused.headers["Retry-After"]) >= 1
        assert 15 <= len(accepted) <= 30  # the depth is sampled, so a few may pass past the watermark
        assert metric(url, "items_backpressure_rejected_total") >= 1
        assert metric(url, "items_backpressure_delayed_total") >= 1
        assert metric(url, "items_queue_depth") >= 15
    finally:
        stack.start("celery")

    def drained_and_accepting() -> bool:
        response = httpx.post(f"{url}/items", json={"name": f"bp-after-{uuid.uuid4().hex[:8]}"}, timeout=10)
        return response.status_code == 202

    wait_until(drained_and_accepting, timeout_s=60, interval_s=0.5)
    ids = ", ".join(f"'{item_id}'" for item_id in accepted)
    wait_until(lambda: stack.psql(f"SELECT count(*) FROM items WHERE id IN ({ids})")[0][0] == len(accepted), 60)
