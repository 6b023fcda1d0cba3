"""Reads on the streaming replica (docs/decisions/010-read-replica.md), on the real servers: the replica streams
from its slot, API reads go to it, a paused (lagging) or stopped replica sends them to the primary within one
request and they come back, and a page is never cached under a version the replica has not replayed.

The stack runs these with REPLICA_MAX_LAG_S=2 (tests/integration/conftest.py)."""

import contextlib
import time
import uuid

import httpx
import pytest
import redis

from tests.integration.test_read_cache import _metric
from tests.support import wait_until

pytestmark = pytest.mark.integration

MAX_LAG_S = 2.0


def _replica_psql(stack, sql: str) -> list[tuple]:
    return stack.psql(sql, port=int(stack.env["STACK_PG_REPLICA_PORT"]))


@contextlib.contextmanager
def _replay_paused(stack):
    """The replica keeps receiving WAL but replays none of it: it falls behind as the primary writes."""
    _replica_psql(stack, "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        _replica_psql(stack, "SELECT pg_wal_replay_resume()")


def _fresh_page(stack, limit: int) -> httpx.Response:
    """A page rebuilt by the app (the version moved on), not served from the app cache."""
    redis.Redis.from_url(stack.env["REDIS_URL"]).incr("items:version")
    response = httpx.get(f"{stack.web_url}/items?limit={limit}", timeout=30)
    assert response.status_code == 200, response.text
    return response


def _reads(stack, database: str) -> float:
    return _metric(stack, "items_db_reads_total", database=database)


def _fallbacks(stack, *reasons: str) -> float:
    return sum(_metric(stack, "items_replica_fallback_total", reason=reason) for reason in reasons)


def _readyz_replica(stack) -> dict:
    body = httpx.get(f"{stack.web_url}/readyz", timeout=10).json()
    return body["checks"]["replica"]


def _accept(stack, name: str) -> str:
    response = httpx.post(f"{stack.web_url}/items", json={"name": name}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _stored_on_primary(stack, item_id: str) -> bool:
    return stack.psql(f"SELECT count(*) FROM items WHERE id = '{item_id}'") == [(1,)]


def test_the_replica_streams_from_its_slot_and_serves_the_api_reads(stack):
    assert stack.psql("SELECT slot_name, active::text FROM pg_replication_slots") == [("items_replica", "true")]
    assert stack.psql("SELECT state FROM pg_stat_replication") == [("streaming",)]
    assert _replica_psql(stack, "SELECT pg_is_in_recovery()::text") == [("true",)]
    item_id = _accept(stack, "streamed")
    wait_until(lambda: _replica_psql(stack, f"SELECT count(*) FROM items WHERE id = '{item_id}'") == [(1,)], 10)

    replica_reads, primary_reads = _reads(stack, "replica"), _reads(stack, "primary")
    pages = [_fresh_page(stack, 91) for _ in range(5)]
    assert all(item_id in page.text for page in pages)
    assert _reads(stack, "replica") >= replica_reads + 4  # a sample may see the replica a moment behind
    assert _reads(stack, "primary") <= primary_reads + 1
    assert httpx.get(f"{stack.web_url}/items/{item_id}", timeout=10).json()["name"] == "streamed"

    check = wait_until(lambda: (c := _readyz_replica(stack))["ok"] and c["reads"] == "replica" and c, timeout_s=10)
    assert 0 <= check["lag_s"] <= MAX_LAG_S and check["max_lag_s"] == MAX_LAG_S
    assert "items_replica_lag_seconds" in httpx.get(f"{stack.web_url}/metrics", timeout=10).text


def test_the_replica_refuses_writes_and_migrations_ran_on_the_primary(stack):
    tables = "SELECT count(*) FROM django_migrations WHERE app = 'items'"
    assert stack.psql(tables) == _replica_psql(stack, tables) != [(0,)]  # replayed, not migrated there
    result = stack.run("status")  # the supervisor runs it like the rest
    assert "postgres-replica" in result.stdout and "up" in result.stdout
    with pytest.raises(AssertionError, match="read-only transaction"):
        _replica_psql(
            stack, "INSERT INTO items (id, name, description, created_at) VALUES (gen_random_uuid(), 'x', '', now())"
        )


def test_a_page_is_never_cached_from_a_replica_that_has_not_replayed_its_version(stack):
    page = f"{stack.web_url}/items?limit=20"
    httpx.get(page, timeout=10)  # the first page is in the app cache
    behind = _fallbacks(stack, "behind", "lagging")
    with _replay_paused(stack):
        accepted_at = time.monotonic()
        item_id = _accept(stack, "fresh-while-replica-paused")
        # The worker's bump makes the cached page stale; its rebuild must not come from the paused replica.
        wait_until(lambda: item_id in httpx.get(page, timeout=10).text, timeout_s=2.0, interval_s=0.05)
        visible_s = time.monotonic() - accepted_at
        assert _replica_psql(stack, f"SELECT count(*) FROM items WHERE id = '{item_id}'") == [(0,)], "not paused"
        # And what is now cached under the new version (served by the fast path) has the item too.
        assert all(item_id in httpx.get(page, timeout=10).text for _ in range(3))
        assert _fallbacks(stack, "behind", "lagging") > behind
    assert visible_s <= 2.0


def test_a_replica_lagging_past_the_limit_sends_reads_to_the_primary_and_gets_them_back(stack):
    with _replay_paused(stack):
        item_id = _accept(stack, "written-while-lagging")
        wait_until(lambda: _stored_on_primary(stack, item_id), timeout_s=10)
        # A second past the limit: every worker's last sample (at most 0.5 s old) is past it too.
        check = wait_until(lambda: (c := _readyz_replica(stack))["lag_s"] > MAX_LAG_S + 1 and c, timeout_s=15)
        assert check["ok"] and check["reads"] == "primary"
        lagging, primary_reads = _fallbacks(stack, "lagging"), _reads(stack, "primary")

        pages = [_fresh_page(stack, 92) for _ in range(4)]

        assert all(item_id in p.text for p in pages)  # answered by the primary, which has it
        assert _fallbacks(stack, "lagging") >= lagging + 4
        assert _reads(stack, "primary") >= primary_reads + 4
        assert _metric(stack, "items_replica_lag_seconds") > MAX_LAG_S
    wait_until(lambda: _readyz_replica(stack)["reads"] == "replica", timeout_s=15)
    replica_reads = _reads(stack, "replica")
    wait_until(lambda: _fresh_page(stack, 93) and _reads(stack, "replica") > replica_reads + 1, timeout_s=10)


def test_with_the_replica_stopped_reads_answer_200_from_the_primary_and_return_to_it_once_it_is_back(stack):
    _fresh_page(stack, 94)  # each worker's connection to items_ro is open: the stop breaks it mid-use
    _fresh_page(stack, 94)
    failed = _fallbacks(stack, "unavailable", "error")
    stack.stop("postgres-replica")
    try:
        started = time.monotonic()
        pages = [_fresh_page(stack, 94) for _ in range(6)]
        elapsed_s = time.monotonic() - started
        missing = httpx.get(f"{stack.web_url}/items/{uuid.uuid4()}", timeout=10)
        ready = httpx.get(f"{stack.web_url}/readyz", timeout=10)
        accepted = _accept(stack, "written-while-replica-down")
    finally:
        stack.start("postgres-replica")
    assert all(p.status_code == 200 for p in pages)
    assert elapsed_s < 10, "a read waited for PgBouncer's query_wait_timeout instead of the replica timeout"
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert ready.status_code == 200  # the replica is reported, never a reason to be unready
    assert ready.json()["checks"]["replica"] == {**ready.json()["checks"]["replica"], "ok": False, "reads": "primary"}
    assert _fallbacks(stack, "unavailable", "error") >= failed + 6

    wait_until(lambda: _stored_on_primary(stack, accepted), timeout_s=10)
    replica_reads = _reads(stack, "replica")
    wait_until(lambda: _fresh_page(stack, 95) and _reads(stack, "replica") > replica_reads + 1, timeout_s=15)
    assert accepted in _fresh_page(stack, 95).text
