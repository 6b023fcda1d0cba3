"""The ASGI handler runs each request's sync code on one thread of its own, kept for later requests."""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.signals import request_finished, request_started

from project.asgi_stack.handler import KeptThreadsASGIHandler

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def request_threads():
    """(path, signal, thread ident) for every request_started/request_finished: Django sends both from the
    request's thread, as it does the middleware and the view."""
    seen, hooks = [], []

    def record(signal_name):
        def receiver(sender, scope=None, **kwargs):
            path = scope["path"] + "?" + scope["query_string"].decode() if scope else None
            seen.append((path, signal_name, threading.get_ident()))

        hooks.append(receiver)
        return receiver

    request_started.connect(record("started"), weak=False)
    request_finished.connect(record("finished"), weak=False)
    yield seen
    request_started.disconnect(hooks[0])
    request_finished.disconnect(hooks[1])


async def get(handler, path: str, query: str = "") -> tuple[int, dict]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    body_sent, sent = False, []

    async def receive():
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    await handler(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_requests_one_after_another_run_on_the_same_kept_thread(request_threads):
    handler = KeptThreadsASGIHandler()
    threads_before = threading.active_count()
    for _ in range(5):
        assert await get(handler, "/healthz") == (200, {"status": "ok"})
    idents = {ident for _, _, ident in request_threads}
    assert len(request_threads) == 10
    assert len(idents) == 1
    assert idents != {threading.get_ident()}  # not the event loop's thread
    assert threading.active_count() <= threads_before + 1
    assert len(handler.idle) == 1


async def test_concurrent_requests_each_get_a_thread_of_their_own_for_all_their_sync_code(request_threads):
    handler = KeptThreadsASGIHandler()
    release = threading.Event()

    def hold_the_first(sender, scope=None, **kwargs):
        if scope["query_string"] == b"hold":
            release.wait(10)

    request_started.connect(hold_the_first, weak=False)
    try:
        first = asyncio.create_task(get(handler, "/healthz", "hold"))
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(get(handler, "/healthz", "second"), 10) == (200, {"status": "ok"})
        assert not first.done()  # its thread is still held: the second ran on another
        release.set()
        assert await asyncio.wait_for(first, 10) == (200, {"status": "ok"})
    finally:
        release.set()
        request_started.disconnect(hold_the_first)
    by_path: dict[str, set[int]] = {}
    for path, _, ident in request_threads:
        by_path.setdefault(path or "finished", set()).add(ident)
    assert len(by_path["/healthz?hold"]) == len(by_path["/healthz?second"]) == 1
    assert by_path["/healthz?hold"] != by_path["/healthz?second"]
    assert by_path["finished"] == by_path["/healthz?hold"] | by_path["/healthz?second"]
    assert len(handler.idle) == 2  # both threads kept for the next requests


class CountingExecutor(ThreadPoolExecutor):
    """A request thread that counts the calls handed to it: each one is a hop from the loop and back."""

    def __init__(self) -> None:
        super().__init__(1)
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs):
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


async def test_a_sync_view_costs_one_hop_to_its_thread_with_the_signals_on_that_same_thread(request_threads):
    handler = KeptThreadsASGIHandler()
    executor = CountingExecutor()
    handler.idle.append(executor)
    status, body = await get(handler, "/items/not-a-uuid")  # DRF view, 404 before any query
    assert (status, body["error"]) == (404, "not_found")
    assert executor.calls == 1  # Django's own handler: four here (each signal, the view, response.close)
    assert [signal for _, signal, _ in request_threads] == ["started", "finished"]
    assert {ident for _, _, ident in request_threads} == {thread.ident for thread in executor._threads}
    assert handler.idle == [executor]
