"""Bounded staleness (docs/architecture.md, guarantees): a row stored while Redis refuses the worker's version
bump still shows in cached pages soon after Redis answers again, not after RESPONSE_CACHE_TTL_S (300 s)."""

import time

import httpx
import pytest
import redis

from tests.support import quiet_cache_version, wait_until

pytestmark = pytest.mark.integration

# Longer than the worker's tries with backoff (3 x REDIS_TIMEOUT_S 0.5 s + 0.15 s), so the bump ends up owed.
PAUSE_MS = 4000


def _worker_metric(stack, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.env['STACK_WORKER_METRICS_PORT']}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_row_stored_during_a_redis_write_pause_appears_in_cached_pages_once_redis_answers(stack):
    page = f"{stack.web_url}/items?limit=7"
    # No earlier test's row still on its way: its bump would make the page stale, and a stale page is rebuilt,
    # which takes a lock (a write) that the pause holds.
    quiet_cache_version(stack.env["REDIS_URL"])
    httpx.get(page, timeout=10)
    assert httpx.get(page, timeout=10).status_code == 200  # now a cached page, valid until the version moves
    failures = _worker_metric(stack, "items_cache_version_bump_failures_total")

    # Redis keeps answering reads (the cached page is served) but holds every write, the worker's INCR included.
    admin = redis.Redis.from_url(stack.env["REDIS_URL"])
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    paused_until = time.monotonic() + PAUSE_MS / 1000
    try:
        accepted = httpx.post(f"{stack.web_url}/items", json={"name": "bumped-after-pause"}, timeout=30)
        assert accepted.status_code == 202
        item_id = accepted.json()["id"]
        wait_until(lambda: stack.psql(f"SELECT count(*) FROM items WHERE id = '{item_id}'") == [(1,)], timeout_s=10)
        assert time.monotonic() < paused_until, "the row was stored after the pause: the test proves nothing"
        assert item_id not in httpx.get(page, timeout=10).text  # stale while Redis holds the bump
        time.sleep(max(0.0, paused_until - time.monotonic()))
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")  # a failure here must not leave the next tests paused

    # Owed bumps are retried every 0.5 s; allow for a loaded machine, but far below the 300 s page TTL.
    wait_until(lambda: item_id in httpx.get(page, timeout=10).text, timeout_s=10)
    assert _worker_metric(stack, "items_cache_version_bump_failures_total") > failures
    assert _worker_metric(stack, "items_cache_version_bump_owed") == 0
