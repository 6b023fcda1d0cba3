"""Reads at cache speed (docs/architecture.md, caching): app cache in Redis, ASGI fast path, no stampede, Nginx
micro-cache."""

import asyncio
import concurrent.futures
import re
import time

import httpx
import pytest
import redis

from app.cache import VERSION_KEY
from tests.support import early_in_a_second, quiet_cache_version

pytestmark = pytest.mark.integration


def _metric(stack, name: str, **labels: str) -> float:
    """Sum of a metric's samples over all gunicorn workers (and label values not named)."""
    text = httpx.get(f"{stack.web_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
        if match and match[1] == name and all(f'{k}="{v}"' in (match[2] or "") for k, v in labels.items()):
            total += float(match[3])
    return total


def _queries(stack) -> float:
    return _metric(stack, "django_db_execute_total")


def test_a_repeated_get_is_answered_from_the_app_cache_without_a_query(stack):
    url = f"{stack.web_url}/items?limit=61"
    first = httpx.get(url)
    queries, hits = _queries(stack), _metric(stack, "items_response_cache_total", result="hit")
    again = [httpx.get(url) for _ in range(5)]

    assert all(r.status_code == 200 and r.content == first.content for r in again)
    assert _queries(stack) == queries
    assert _metric(stack, "items_response_cache_total", result="hit") == hits + 5


def test_a_hit_from_the_fast_path_has_the_headers_of_a_django_answer_and_honours_if_none_match(stack):
    url = f"{stack.web_url}/items?limit=62"
    from_django = httpx.get(url)  # a miss: built by the Django view
    from_cache = httpx.get(url)
    for header in (
        "content-type",
        "etag",
        "cache-control",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cross-origin-opener-policy",
    ):
        assert from_cache.headers[header] == from_django.headers[header], header
    assert httpx.get(url, headers={"If-None-Match": from_cache.headers["etag"]}).status_code == 304


def test_100_concurrent_misses_of_one_key_cost_one_query(stack):
    url = f"{stack.web_url}/items?limit=63"
    version = quiet_cache_version(stack.env["REDIS_URL"])
    queries = _queries(stack)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(*(client.get(url) for _ in range(100)))

    answers = asyncio.run(burst())
    served = [r for r in answers if r.status_code == 200]
    # The load shedder may turn part of a 100-request burst away (503 overloaded): those reach no query.
    assert all(r.status_code == 200 or r.json()["error"] == "overloaded" for r in answers)
    assert len(served) >= 20
    assert len({r.content for r in served}) == 1
    assert redis.Redis.from_url(stack.env["REDIS_URL"]).get(VERSION_KEY) == version, "a write landed mid-burst"
    assert _queries(stack) - queries == 1


def test_a_stored_row_is_on_the_first_page_within_the_micro_cache_ttl(stack):
    with httpx.Client(base_url=stack.base_url, timeout=10) as api:
        for _ in range(3):
            api.get("/items")  # the page is cached in Nginx and in Redis
        item_id = api.post("/items", json={"name": "fresh-row"}).json()["id"]
        deadline = time.monotonic() + 30
        while not stack.psql(f"SELECT 1 FROM items WHERE id = '{item_id}'"):
            assert time.monotonic() < deadline, "the worker did not store the row"
            time.sleep(0.02)
        stored_at = time.monotonic()
        while item_id not in api.get("/items").text:
            time.sleep(0.05)
            assert time.monotonic() - stored_at < 10
        # The app stamps each micro-cache entry to expire when its second ends (X-Accel-Expires), so no cached page
        # is older than the 1 s TTL (the app cache itself is invalidated at the commit): 0.5 s for the refresh
        # behind a stale answer, the polling and the noise.
        assert time.monotonic() - stored_at <= 1.0 + 0.5


def test_nginx_reports_miss_then_hit_then_stale_or_updating(stack):
    url = f"{stack.base_url}/items?limit=64"
    early_in_a_second()
    assert httpx.get(url).headers["x-cache-status"] == "MISS"
    assert httpx.get(url).headers["x-cache-status"] == "HIT"
    time.sleep(1.1)  # past the 1 s TTL
    # Expired: served stale while refreshed, or refetched. MISS too: an entry unread for 1 s may already have been
    # dropped by the cache manager (inactive=1s, deploy/nginx), which is what bounds staleness after a quiet spell.
    assert httpx.get(url).headers["x-cache-status"] in {"STALE", "UPDATING", "EXPIRED", "MISS"}
    assert httpx.post(f"{stack.base_url}/items", json={"name": "not cached"}).headers.get("x-cache-status") is None


def test_with_redis_down_reads_come_from_postgresql_and_the_failure_is_counted(stack):
    errors = _metric(stack, "items_response_cache_total", result="error")
    stack.stop("redis")
    try:
        answers = [httpx.get(f"{stack.web_url}/items?limit=65", timeout=10) for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5
        item = httpx.get(f"{stack.web_url}/items?limit=1").json()["results"][0]
        assert httpx.get(f"{stack.web_url}/items/{item['id']}").json() == item
        assert _metric(stack, "items_response_cache_total", result="error") > errors
    finally:
        stack.start("redis")


def test_the_page_query_is_an_index_scan_in_key_order_with_no_sort(stack):
    # A realistic table: on a handful of rows a sequential scan is rightly cheaper. These ids sort before any
    # real UUIDv7, so they never reach the first page other tests read.
    stack.psql(
        "INSERT INTO items (id, name, description, created_at) SELECT "
        "('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, 'explain-' || n, '', now() "
        "FROM generate_series(1, 20000) AS n ON CONFLICT DO NOTHING"
    )
    stack.psql("ANALYZE items")
    some_id = stack.psql("SELECT id FROM items WHERE name = 'explain-15000'")[0][0]
    plan = "\n".join(
        str(row[0])
        for row in stack.psql(
            "EXPLAIN SELECT id, name, description, created_at FROM items "
            f"WHERE id < '{some_id}' ORDER BY id DESC LIMIT 21"
        )
    )
    assert "Index Scan Backward using items_pkey" in plan, plan
    assert "Sort" not in plan, plan


@pytest.fixture
def in_process_cache(stack, settings, monkeypatch):
    """app.cache in this process against the stack's Redis, a client of its own and no breaker left open."""
    from app import cache

    settings.REDIS_URL = stack.env["REDIS_URL"]
    monkeypatch.setattr(cache, "_client", None)
    monkeypatch.setattr(cache.breaker, "open_until", 0.0)
    return cache


def test_a_hit_makes_no_database_query_and_no_thread_hop(in_process_cache, settings, monkeypatch):
    """In-process, against the stack's Redis: the fast path answers without Django, a query or sync_to_async."""
    from asgiref.sync import SyncToAsync
    from django.db.backends.utils import CursorWrapper

    from app.fast_path import FastPath

    cache = in_process_cache
    settings.ALLOWED_HOSTS = ["localhost"]
    body = b'{"results":[],"next":null}'
    key = cache.page_key(20, "in-process-test")
    client = cache._redis()
    version = int(client.get(cache.VERSION_KEY) or 0)
    client.set(key, cache.encode(version, cache.etag_for(body), body), ex=60)

    calls = {"hops": 0, "queries": 0, "django": 0}
    original_hop = SyncToAsync.__call__

    async def counting_hop(self, *args, **kwargs):
        calls["hops"] += 1
        return await original_hop(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting_hop)
    monkeypatch.setattr(CursorWrapper, "execute", lambda *a, **k: calls.__setitem__("queries", 1))

    async def django(scope, receive, send):
        calls["django"] += 1

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "query_string": b"cursor=in-process-test",
        "headers": [(b"host", b"localhost")],
    }
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own, as a uvicorn worker has
        pool.submit(asyncio.run, FastPath(django)(scope, None, send)).result()

    assert calls == {"hops": 0, "queries": 0, "django": 0}
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == body


def test_a_miss_is_built_in_three_redis_round_trips_and_a_hit_in_one(stack, in_process_cache, monkeypatch):
    """As a Django view calls it: the lookup, the rebuild lock, then the entry with the lock's release; a hit is
    the lookup alone, and takes no lock. Under load each round trip from a request thread waits its turn for the
    GIL."""
    from redis.connection import Connection

    cache = in_process_cache
    client = cache._redis()
    client.ping()  # connected before counting
    version = quiet_cache_version(stack.env["REDIS_URL"])  # no bump between the miss and the hit
    original_send = Connection.send_packed_command

    class Uncounted(Connection):
        send_packed_command = original_send

    observer = redis.Redis.from_url(stack.env["REDIS_URL"], connection_class=Uncounted)
    sends: list[bytes] = []

    def counted_send(self, command, *args, **kwargs):
        sends.append(command)
        return original_send(self, command, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counted_send)
    key = cache.page_key(20, f"round-trips-{time.time_ns()}")
    body = b'{"results":[],"next":null}'
    locked_while_building: list[bool] = []

    def build(min_lsn: int | None) -> bytes:
        locked_while_building.append(bool(observer.exists("lock:" + key)))
        return body

    missed = cache.get_or_build(key, build, versioned=True)
    assert len(sends) == 3, sends
    assert locked_while_building == [True]
    assert not observer.exists("lock:" + key)
    entry_version, _, cached = cache.decode(observer.get(key))
    assert (entry_version, cached) == (int(version or 0), body)

    sends.clear()
    hit = cache.get_or_build(key, build, versioned=True)
    assert len(sends) == 1, sends
    assert hit == missed == (cache.etag_for(body), body)
    assert len(locked_while_building) == 1, "a hit builds nothing"


def test_a_value_that_is_not_an_entry_of_ours_is_rebuilt_even_with_the_current_versions_prefix(stack, in_process_cache):
    cache = in_process_cache
    client = cache._redis()
    version = int(quiet_cache_version(stack.env["REDIS_URL"]) or 0)
    key = cache.page_key(20, f"foreign-{time.time_ns()}")
    body = b'{"results":[],"next":null}'
    for foreign in (b"%d\n" % version, b"%d\nno-second-line" % version, b"%d\n\xff\xfe\nbody" % version):
        client.set(key, foreign, ex=60)
        assert cache.get_or_build(key, lambda min_lsn: body, versioned=True) == (cache.etag_for(body), body)
        assert cache.decode(client.get(key))[2] == body
        assert not client.exists("lock:" + key)


def test_a_fresh_entry_is_served_while_redis_holds_writes_as_in_a_failover(stack, in_process_cache):
    """CLIENT PAUSE WRITE is how a Redis failover hands over: reads go on, writes and every script wait. A Django
    view's lookup must still serve a fresh entry then, without waiting out the timeout and opening the breaker."""
    cache = in_process_cache
    client = cache._redis()
    version = int(quiet_cache_version(stack.env["REDIS_URL"]) or 0)
    key = cache.page_key(20, f"paused-{time.time_ns()}")
    body = b'{"results":[],"next":null}'
    client.set(key, cache.encode(version, cache.etag_for(body), body), ex=60)

    def build(min_lsn: int | None) -> bytes:
        raise AssertionError("a fresh entry was built again")

    admin = redis.Redis.from_url(stack.env["REDIS_URL"])
    admin.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        served = cache.get_or_build(key, build, versioned=True)
        breaker_open = cache.breaker.is_open()
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")

    assert served == (cache.etag_for(body), body)
    assert not breaker_open


def test_a_miss_that_looked_just_before_another_request_rebuilt_serves_that_rebuild(
    stack, in_process_cache, monkeypatch
):
    """The race 100 concurrent misses run: a request finds no entry, and before it asks for the lock another
    request has taken it, built the page and released it. The first must serve that page, not query again."""
    cache = in_process_cache
    quiet_cache_version(stack.env["REDIS_URL"])
    key = cache.page_key(20, f"looked-before-{time.time_ns()}")
    body = b'{"results":[],"next":null}'
    builds: list[int | None] = []

    def build(min_lsn: int | None) -> bytes:
        builds.append(min_lsn)
        return body

    original_mget = redis.Redis.mget

    def looked_then_another_rebuilt(self, *keys):
        looked = original_mget(self, *keys)
        monkeypatch.setattr(redis.Redis, "mget", original_mget)
        assert cache.get_or_build(key, build, versioned=True) == (cache.etag_for(body), body)  # start to end
        return looked

    monkeypatch.setattr(redis.Redis, "mget", looked_then_another_rebuilt)

    def second_build(min_lsn: int | None) -> bytes:
        raise AssertionError("built again")

    assert cache.get_or_build(key, second_build, versioned=True) == (cache.etag_for(body), body)
    assert len(builds) == 1
    assert not cache._redis().exists("lock:" + key)
