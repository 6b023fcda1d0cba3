"""The request id: the client's (Nginx's) X-Request-ID when sane, else a new one; on every response, the shedder's
503s and fast-path hits included; in every log record of the request, as JSON lines that parse."""

import asyncio
import io
import json
import logging
import re
import time
from typing import Any, cast

import httpx
import pytest

from app import cache
from app.fast_path import FastPath
from project import logs
from project.asgi_stack.request_id import RequestId
from project.asgi_stack.shedding import LoadShedding
from tests.support import json_log_of

GENERATED = re.compile(r"^[0-9a-f]{32}$")
logger = logging.getLogger("items.test")


@pytest.fixture
def json_log():
    """Root records formatted as production's stderr handler does (settings.LOGGING, LOG_FORMAT=json)."""
    with json_log_of(None) as stream:
        yield stream


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def _logs_and_answers(scope, receive, send):
    logger.info("inside the request")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(app, path: str = "/items", **headers: str) -> list[dict]:
    sent: list[dict] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
    }

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, None, send))
    return sent


def response_id(sent: list[dict]) -> str:
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    (value,) = [v for k, v in start["headers"] if k == b"x-request-id"]
    return value.decode()


def test_the_id_from_the_header_is_returned_and_in_every_log_record_of_the_request(json_log):
    sent = _call(RequestId(_logs_and_answers), **{"X-Request-ID": "abc123"})

    assert response_id(sent) == "abc123"
    (record,) = [r for r in records(json_log) if r["logger"] == "items.test"]
    assert record["message"] == "inside the request"
    assert record["request_id"] == "abc123"
    assert record["level"] == "INFO" and record["time"]
    assert logs.request_id.get() is None  # unbound after the request


def test_a_record_outside_any_request_has_no_request_id(json_log):
    logger.info("at start")
    (record,) = records(json_log)
    assert "request_id" not in record


def test_without_a_header_an_id_is_generated(json_log):
    sent = _call(RequestId(_logs_and_answers))
    generated = response_id(sent)
    assert GENERATED.match(generated)
    assert [r["request_id"] for r in records(json_log) if r["logger"] == "items.test"] == [generated]


@pytest.mark.parametrize(
    "sent",
    ["", "x" * 129, "line\nbreak", "tab\there", "caf\xe9", "nul\x00", "del\x7f"],
    ids=["empty", "too-long", "newline", "tab", "non-ascii", "nul", "del"],
)
def test_an_insane_id_is_replaced_by_a_generated_one(sent):
    scope_headers = [(b"x-request-id", sent.encode("latin-1"))]
    answered: list[dict] = []

    async def send(message):
        answered.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": scope_headers}
    asyncio.run(RequestId(_logs_and_answers)(scope, None, send))
    assert GENERATED.match(response_id(answered))


def test_printable_ascii_up_to_128_characters_is_kept():
    for sent in ["x" * 128, 'a "quoted" id; with=all sorts~of/chars', "0"]:
        assert response_id(_call(RequestId(_logs_and_answers), **{"X-Request-ID": sent})) == sent


def test_a_shed_503_carries_the_id():
    app = RequestId(LoadShedding(_logs_and_answers))
    sent = _call(app, **{"X-Request-Start": f"t={time.time() - 10:.3f}", "X-Request-ID": "shed-1"})
    assert sent[0]["status"] == 503
    assert response_id(sent) == "shed-1"
    assert dict(sent[0]["headers"])[b"retry-after"] == b"1"  # the shedder's own headers are kept


class _AnyKeyCache:
    async def fresh(self, key: str, *, versioned: bool) -> tuple[str, bytes]:
        return '"tag"', b'{"results": [], "next": null}'


def test_a_fast_path_hit_carries_the_id():
    async def django(scope, receive, send):
        raise AssertionError("a hit never reaches Django")

    fast_path = FastPath(django)
    fast_path.lookup = cast(cache.AsyncLookup, _AnyKeyCache())
    sent = _call(RequestId(fast_path), **{"Host": "localhost", "X-Request-ID": "hit-1"})
    assert sent[0]["status"] == 200
    assert response_id(sent) == "hit-1"


@pytest.mark.django_db(transaction=True)
def test_a_post_through_the_asgi_app_answers_with_its_id_and_publishes_it_in_the_message_headers(monkeypatch):
    """Through the whole pipeline: the id reaches Django's request thread (asgiref copies the context) and the
    publish; on the embedded default apply_async runs the task in process, so what it receives is the message."""
    from app.tasks import items_store_task
    from project.asgi import application

    received: dict[str, Any] = {}
    real = items_store_task.apply_async

    def apply_async(*args, **options):
        received.update(options, bound=logs.request_id.get())
        return real(*args, **options)

    monkeypatch.setattr(items_store_task, "apply_async", apply_async)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=cast(Any, application))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.post("/items", json={"name": "traced"}, headers={"X-Request-ID": "post-1"})

    response = asyncio.run(post())
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "post-1"
    assert received["bound"] == "post-1"
    assert received["headers"] == {"x-request-id": "post-1"}
