"""Limits a client reaching the app directly meets before anything reads its request: body size (without
reading an oversized body), chunked bodies measured and made readable, headers bounded."""

import asyncio
import json

import pytest

from project.asgi_stack.request_limits import MAX_HEADER_COUNT, RequestLimits

pytestmark = pytest.mark.django_db(transaction=True)


def _scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "method": method,
        "path": "/items",
        "query_string": b"",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"), *(headers or [])],
    }


class Client:
    """Feeds an ASGI app a body in chunks and records what it sends; counts the chunks it was asked for."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.read = chunks, 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.read < len(self.chunks):
            self.read += 1
            return {
                "type": "http.request",
                "body": self.chunks[self.read - 1],
                "more_body": self.read < len(self.chunks),
            }
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def body(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))

    def header(self, name: bytes) -> bytes | None:
        return dict(self.sent[0]["headers"]).get(name)


def _run(app, scope: dict, client: Client) -> None:
    asyncio.run(asyncio.wait_for(app(scope, client.receive, client.send), 30))


def _django():
    from project.asgi import django_application

    return RequestLimits(django_application)


def test_a_content_length_over_the_limit_is_413_before_a_byte_of_the_body_is_read():
    client = Client([b"x" * 1000] * 60_000)  # 60 MB, if anyone read it
    _run(_django(), _scope(headers=[(b"content-length", b"60000000")]), client)
    assert client.status == 413 and client.body["error"] == "payload_too_large"
    assert client.read == 0
    assert client.header(b"connection") == b"close"


def test_a_chunked_body_is_read_only_up_to_the_limit_then_refused():
    client = Client([b"x" * 4096] * 100)
    _run(_django(), _scope(headers=[(b"transfer-encoding", b"chunked")]), client)
    assert client.status == 413 and client.body["error"] == "payload_too_large"
    assert client.read == 5  # 16 KiB is four chunks; the fifth passes it; the other 95 are never read


def test_a_valid_chunked_post_is_accepted_not_read_as_empty():
    from app.models import Item

    body = json.dumps({"name": "chunky"}).encode()
    client = Client([body[:5], body[5:]])
    _run(_django(), _scope(headers=[(b"transfer-encoding", b"chunked")]), client)
    assert client.status == 202, client.sent
    assert Item.objects.filter(name="chunky").count() == 1


def test_too_many_headers_are_431_in_the_envelope():
    client = Client([b""])
    many = [(b"x-h-%d" % n, b"v") for n in range(MAX_HEADER_COUNT + 1)]
    _run(_django(), _scope("GET", headers=many), client)
    assert client.status == 431 and client.body["error"] == "request_header_too_large"


def test_a_huge_header_is_431_in_the_envelope():
    client = Client([b""])
    _run(_django(), _scope("GET", headers=[(b"x-big", b"a" * 4_000_000)]), client)
    assert client.status == 431


def test_an_ordinary_request_passes_untouched():
    client = Client([b""])
    _run(_django(), _scope("GET"), client)
    assert client.status == 200
