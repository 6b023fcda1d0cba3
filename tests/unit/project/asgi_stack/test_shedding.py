"""Load shedding in front of Django: admitted, queued on the loop, or answered 503 at once."""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import REGISTRY

from project.asgi_stack.pacing import client_connection
from project.asgi_stack.shedding import LoadShedder, LoadShedding, QueueDelay


def shed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("items_shed_total", {"reason": reason}) or 0.0


@pytest.fixture
def one_at_a_time(settings):
    settings.SHED_LIMIT_MIN = settings.SHED_LIMIT_INITIAL = settings.SHED_LIMIT_MAX = 1


_ports = itertools.count(40000)


def _scope(path: str, client: tuple[str, int] | None = None, **headers: str) -> dict:
    """A request on a connection of its own (from the loopback proxy), unless `client` is given."""
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "client": client or ("127.0.0.1", next(_ports)),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def _asgi_get(
    app, path: str, client: tuple[str, int] | None = None, /, **headers: str
) -> tuple[int, dict, bytes]:
    """`client` is positional-only: no header name passed in **headers can take its place."""
    sent = []

    async def send(message):
        sent.append(message)

    await app(_scope(path, client, **headers), None, send)
    return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]}, sent[1]["body"]


def assert_overloaded_asgi(status: int, headers: dict, body: bytes) -> None:
    assert status == 503
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"] == "overloaded"


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def held_app(entered: asyncio.Event, release: asyncio.Event):
    async def slow(scope, receive, send):
        if scope["path"] == "/items":
            entered.set()
            await release.wait()
        await _ok(scope, receive, send)

    return slow


@pytest.mark.anyio
async def test_async_over_the_running_limit_a_request_waits_its_turn_on_the_loop_and_is_then_served(one_at_a_time):
    entered, release = asyncio.Event(), asyncio.Event()
    app = LoadShedding(held_app(entered, release))
    first = asyncio.create_task(_asgi_get(app, "/items"))
    await asyncio.wait_for(entered.wait(), 10)
    second = asyncio.create_task(_asgi_get(app, "/other"))
    await asyncio.sleep(0.05)
    assert not second.done()
    assert gauge("items_shed_queued") == 1
    for probe in ("/healthz", "/readyz", "/metrics"):  # never queued behind it
        assert (await asyncio.wait_for(_asgi_get(app, probe), 1))[0] == 200
    release.set()
    assert (await asyncio.wait_for(first, 10))[0] == 200
    assert (await asyncio.wait_for(second, 10))[0] == 200
    assert gauge("items_shed_queued") == 0
    assert app.shedder.limiter.inflight == 0


@pytest.mark.anyio
async def test_async_a_request_behind_a_waiter_older_than_the_queue_target_is_shed_at_once(one_at_a_time, settings):
    settings.SHED_QUEUE_TARGET_MS = 100  # the whole budget (SHED_MAX_QUEUE_TIME_MS) stays 1 s
    entered, release = asyncio.Event(), asyncio.Event()
    app = LoadShedding(held_app(entered, release))
    first = asyncio.create_task(_asgi_get(app, "/items"))
    await asyncio.wait_for(entered.wait(), 10)
    second = asyncio.create_task(_asgi_get(app, "/other"))  # nothing measured yet: it joins the queue
    await asyncio.sleep(0.15)  # ... and has now waited past the target: the queue stands too long
    assert not second.done()
    before, started = shed_count("concurrency"), time.perf_counter()
    assert_overloaded_asgi(*await asyncio.wait_for(_asgi_get(app, "/items"), 10))
    assert time.perf_counter() - started < 0.5  # answered, not queued until the budget ran out
    assert shed_count("concurrency") == before + 1
    release.set()
    assert (await asyncio.wait_for(first, 10))[0] == 200
    assert (await asyncio.wait_for(second, 10))[0] == 200


@pytest.mark.anyio
@pytest.mark.parametrize("target_ms, queued", [(100, False), (500, True)])
async def test_async_a_request_joins_the_queue_only_while_its_measured_delay_is_within_the_target(
    one_at_a_time, settings, target_ms, queued
):
    settings.SHED_QUEUE_TARGET_MS = target_ms
    entered, release = asyncio.Event(), asyncio.Event()
    app = LoadShedding(held_app(entered, release))
    first = asyncio.create_task(_asgi_get(app, "/items"))
    await asyncio.wait_for(entered.wait(), 10)
    app.delay = QueueDelay()
    app.delay.left(0.3, time.monotonic())  # the requests that just left the queue each waited 0.3 s
    second = asyncio.create_task(_asgi_get(app, "/other"))
    await asyncio.sleep(0.05)
    assert second.done() is not queued
    assert gauge("items_shed_queued") == (1 if queued else 0)
    if not queued:
        assert_overloaded_asgi(*second.result())
    release.set()
    assert (await asyncio.wait_for(first, 10))[0] == 200
    if queued:
        assert (await asyncio.wait_for(second, 10))[0] == 200


def test_the_queue_delay_is_the_shortest_wait_of_a_window_so_one_unlucky_request_does_not_make_it():
    delay = QueueDelay(window_s=0.1)
    delay.left(0.2, now=10.0)
    delay.left(0.9, now=10.01)  # one slow outlier among steady 0.2 s waits: a hundred clients in a closed loop
    delay.left(0.25, now=10.02)
    assert delay.standing_s(10.05, oldest_age_s=0.0) == 0.2
    delay.left(0.18, now=10.12)  # the next window: the previous one still counts until this one is whole
    assert delay.standing_s(10.13, oldest_age_s=0.0) == 0.18


def test_the_queue_delay_is_at_least_the_age_of_the_oldest_waiter_and_forgets_a_window_nobody_left():
    delay = QueueDelay(window_s=0.1)
    delay.left(0.05, now=10.0)
    assert delay.standing_s(10.01, oldest_age_s=0.7) == 0.7  # nobody left since it joined: a stalled backend
    assert delay.standing_s(10.5, oldest_age_s=0.0) == 0.0  # windows with nobody leaving: no stale figure
    delay.left(0.0, now=10.6)  # a request that found a free slot: no queue stands
    assert delay.standing_s(10.61, oldest_age_s=0.0) == 0.0


def test_the_queue_target_never_exceeds_the_whole_budget(settings):
    settings.SHED_QUEUE_TARGET_MS, settings.SHED_MAX_QUEUE_TIME_MS = 400, 100
    assert LoadShedder().queue_target_s == 0.1


@pytest.mark.anyio
async def test_async_a_queued_request_whose_time_runs_out_is_shed(one_at_a_time, settings):
    settings.SHED_MAX_QUEUE_TIME_MS = 50
    entered, release = asyncio.Event(), asyncio.Event()
    app = LoadShedding(held_app(entered, release))
    first = asyncio.create_task(_asgi_get(app, "/items"))
    await asyncio.wait_for(entered.wait(), 10)
    before, started = shed_count("queue_time"), time.perf_counter()
    assert_overloaded_asgi(*await asyncio.wait_for(_asgi_get(app, "/items"), 10))
    assert 0.04 <= time.perf_counter() - started < 1
    assert shed_count("queue_time") == before + 1
    release.set()
    assert (await asyncio.wait_for(first, 10))[0] == 200
    assert (await _asgi_get(app, "/other"))[0] == 200  # the expired waiter holds no slot


@pytest.mark.anyio
async def test_async_a_storm_of_rejections_is_answered_at_the_pace(settings):
    settings.SHED_REJECTIONS_PER_S = 20  # one every 50 ms past a 0.5 s burst: 11 at once, then 50, 100, 150 ms
    app = LoadShedding(_ok)
    before, started = gauge("items_shed_paced_total"), time.perf_counter()
    storm = (_asgi_get(app, "/items", **{"X-Request-Start": old_start(10)}) for _ in range(14))
    answers = await asyncio.gather(*storm)
    for answer in answers:
        assert_overloaded_asgi(*answer)
    assert time.perf_counter() - started >= 0.14  # the 14th was held 150 ms
    assert gauge("items_shed_paced_total") == before + 3


@pytest.mark.anyio
async def test_async_a_503_on_the_same_client_connection_within_retry_after_is_held_and_counted():
    app = LoadShedding(_ok)
    app.tarpit.retry_after_s = 0.3  # shorter than the real 1 s, to keep the test quick
    old, before = old_start(10), gauge("items_shed_paced_total")

    async def timed(**headers):
        started = time.perf_counter()
        assert_overloaded_asgi(*await _asgi_get(app, "/items", **{"X-Request-Start": old}, **headers))
        return time.perf_counter() - started

    assert await timed(**{"X-Client-Connection": "7"}) < 0.1  # through Nginx (a trusted proxy)
    assert await timed(**{"X-Client-Connection": "7"}) >= 0.25  # the same client connection, re-sent at once
    assert await timed(**{"X-Client-Connection": "8"}) < 0.1  # another client connection
    assert gauge("items_shed_paced_total") == before + 1


@pytest.mark.anyio
async def test_async_x_client_connection_from_an_untrusted_peer_is_ignored():
    app = LoadShedding(_ok)
    forged = {"X-Request-Start": old_start(10), "X-Client-Connection": "7"}
    started = time.perf_counter()
    for port in (5001, 5002):  # two connections of one untrusted client, both claiming to be connection 7
        assert_overloaded_asgi(*await _asgi_get(app, "/items", ("203.0.113.5", port), **forged))
    assert time.perf_counter() - started < 0.5  # keyed by its own connections: neither was held
    assert client_connection(_scope("/items", ("203.0.113.5", 5001), **forged)) == ("203.0.113.5", 5001)


def test_it_wraps_django_in_production_and_is_off_in_the_embedded_default(settings):
    import project.asgi

    assert LoadShedding not in project.asgi.PIPELINE  # make run: a development server
    probe = (
        "import project.asgi; from project.asgi_stack.shedding import LoadShedding; "
        "print(LoadShedding in project.asgi.PIPELINE)"
    )
    env = {
        "PATH": os.environ["PATH"],
        "APP_ENV": "production",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SECRET_KEY": "prod-Secret-Value-used-only-by-these-tests-0123456789-abcdefXYZ",
        "ALLOWED_HOSTS": "x",
        "WEB_CONCURRENCY": "1",  # per-process state is refused with more (items.E006)
    }
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


@pytest.mark.anyio
async def test_a_shed_request_never_reaches_django_and_needs_no_thread():
    reached = []

    async def django(scope, receive, send):
        reached.append(threading.get_ident())
        await _ok(scope, receive, send)

    app = LoadShedding(django)
    await _asgi_get(app, "/items", **{"X-Request-Start": old_start(10)})
    assert reached == []
    await _asgi_get(app, "/items")
    assert reached == [threading.get_ident()]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def old_start(seconds_ago: float) -> str:
    return f"t={time.time() - seconds_ago:.3f}"


@pytest.mark.anyio
async def test_a_request_that_waited_too_long_in_front_of_the_app_is_shed_at_once():
    app = LoadShedding(_ok)
    before = shed_count("queue_time")
    assert_overloaded_asgi(*await _asgi_get(app, "/items", **{"X-Request-Start": old_start(10)}))
    assert shed_count("queue_time") == before + 1
    assert (await _asgi_get(app, "/items", **{"X-Request-Start": old_start(0.01)}))[0] == 200


@pytest.mark.anyio
async def test_health_and_metrics_are_never_shed_however_long_they_waited():
    app = LoadShedding(_ok)
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert (await _asgi_get(app, probe, **{"X-Request-Start": old_start(60)}))[0] == 200


@pytest.mark.django_db
def test_in_flight_and_limit_are_in_metrics(client):
    LoadShedder()  # as each worker does at start
    text = client.get("/metrics").content.decode()
    assert "items_shed_inflight " in text
    assert "items_shed_limit " in text
