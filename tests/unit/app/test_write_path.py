"""The ASGI write path accepts exactly what the Django view would, answers as it would, and hands Django the rest
with the body unread; acceptance keeps the Idempotency-Key, rate-limit and failure semantics of the Django path."""

import asyncio
import json
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from app.exceptions import BrokerUnavailable, PublishUnconfirmed, QueueFull
from app.write_path import WritePath

pytestmark = pytest.mark.django_db

JSON = "application/json"


class FakePublisher:
    """Records what the write path publishes; `fail` raises instead (once each, in order)."""

    def __init__(self, *fail: BaseException) -> None:
        self.attempts: list[dict] = []
        self.published: list[dict] = []
        self.fail = list(fail)

    async def publish(self, payload: dict, *, request_id: str | None) -> None:
        self.attempts.append(payload)
        if self.fail:
            raise self.fail.pop(0)
        self.published.append(payload)


class Django:
    """Stands for Django's handler: records what it is handed, answers 299 so a test can tell who answered."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _app(*fail: BaseException) -> tuple[WritePath, Django, FakePublisher]:
    django = Django()
    app = WritePath(django)
    publisher = FakePublisher(*fail)
    app.publisher = publisher  # type: ignore[assignment]
    return app, django, publisher


async def _post(app, body: bytes, *, path: str = "/items", client: str = "127.0.0.1", **headers: str):
    headers.setdefault("content-type", JSON)
    headers.setdefault("host", "localhost")
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "client": (client, 50000),
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }
    chunks = [{"type": "http.request", "body": body[:3], "more_body": True}, {"type": "http.request", "body": body[3:]}]
    sent = []

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, sent[1]["body"]


def test_a_valid_post_is_accepted_here_with_the_answer_the_django_view_gives(client):
    app, django, publisher = _app()
    status, headers, body = asyncio.run(_post(app, b'{"name": "lamp", "description": "brass"}'))

    assert status == 202 and not django.bodies
    answer = json.loads(body)
    assert answer["status"] == "accepted" and uuid.UUID(answer["id"]).version == 7
    assert headers["location"] == f"/items/{answer['id']}"
    (payload,) = publisher.published
    assert (payload["id"], payload["name"], payload["description"]) == (answer["id"], "lamp", "brass")
    # The same headers as the Django view's 202 (but for how the length is told).
    djangos = client.post("/items", data=b'{"name": "lamp"}', content_type=JSON)
    assert djangos.status_code == 202
    assert set(headers) - {"content-length"} == {k.lower() for k in djangos.headers} - {"content-length"}
    for name in ("content-type", "cache-control", "allow", "x-frame-options", "referrer-policy"):
        assert headers[name] == djangos.headers[name]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"lamp"',
        b'{"name": 1}',
        b'{"name": ""}',
        b'{"name": "   "}',
        b'{"name": "' + b"x" * 201 + b'"}',
        b'{"name": "\\ud800"}',
        b'{"name": NaN}',
        b'{"name": "x", "description": true}',
        b"\xef\xbb\xbf{}",
        b'{"name": "caf\xe9"}',
        b"{",
        b"",
        b'{"name": ' + b"[" * 8000 + b"]" * 8000 + b"}",  # nested past the parser's recursion limit
    ],
    ids=lambda body: repr(body[:40]),
)
@pytest.mark.anyio
async def test_a_body_the_serializer_refuses_goes_to_django_byte_for_byte_and_nothing_is_published(body, client):
    app, django, publisher = _app()
    assert (await _post(app, body))[0] == 299
    assert django.bodies == [body] and not publisher.published
    # ... and Django does refuse it (a 4xx envelope), so nothing the write path hands on is lost or accepted twice.
    assert 400 <= client.post("/items", data=body, content_type=JSON).status_code < 500


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"content_type": "text/plain"},
        {"content_type": "application/json; charset=latin-1"},
        {"content_type": "application/x-www-form-urlencoded"},
        {"accept": "text/html"},
        {"accept": "application/json;q=0"},
        {"host": "evil.example"},
        {"idempotency_key": "a,b"},
        {"idempotency_key": ""},
    ],
)
@pytest.mark.anyio
async def test_what_only_django_answers_goes_to_django_with_the_body(headers):
    app, django, publisher = _app()
    assert (await _post(app, b'{"name": "lamp"}', **headers))[0] == 299
    assert django.bodies == [b'{"name": "lamp"}'] and not publisher.published


@pytest.mark.anyio
async def test_other_paths_and_methods_are_not_touched():
    app, django, _ = _app()
    assert (await _post(app, b'{"name": "lamp"}', path="/items/abc"))[0] == 299
    assert (await _post(app, b'{"name": "lamp"}', path="/itemsx"))[0] == 299
    assert len(django.bodies) == 2


@pytest.mark.anyio
async def test_the_same_idempotency_key_and_body_get_the_same_id_and_one_publish():
    app, _, publisher = _app()
    answers = [await _post(app, b'{"name": "once"}', idempotency_key="k-1") for _ in range(3)]
    assert {status for status, _, _ in answers} == {202}
    assert len({json.loads(body)["id"] for _, _, body in answers}) == 1
    assert len(publisher.published) == 1
    status, headers, body = await _post(app, b'{"name": "another"}', idempotency_key="k-1")
    assert status == 422 and json.loads(body)["error"] == "idempotency_conflict"
    assert headers["content-type"] == "application/json; charset=utf-8" and headers["x-frame-options"] == "DENY"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "code", "same_id_on_retry"),
    [
        (QueueFull(), "queue_full", False),
        (BrokerUnavailable(), "broker_unavailable", False),
        (PublishUnconfirmed(), "broker_unavailable", True),
    ],
)
@pytest.mark.anyio
async def test_a_failed_publish_is_a_503_and_a_retry_with_the_key_publishes_the_id_only_if_it_may_be_queued(
    failure, code, same_id_on_retry
):
    app, _, publisher = _app(failure)
    status, headers, body = await _post(app, b'{"name": "retry me"}', idempotency_key="k-2")
    assert status == 503 and json.loads(body)["error"] == code and int(headers["retry-after"]) >= 1
    assert not publisher.published
    status, _, body = await _post(app, b'{"name": "retry me"}', idempotency_key="k-2")
    assert status == 202
    (payload,) = publisher.published
    assert payload["id"] == json.loads(body)["id"]
    # After an unconfirmed publish the key stays bound: the retry publishes that same id (stored once). After a
    # refusal nothing was queued: the key was released and the retry is a new item.
    first_attempt, retry = publisher.attempts
    assert (retry["id"] == first_attempt["id"]) is same_id_on_retry


def test_the_post_rate_limit_is_one_counter_with_the_django_path(settings, client):
    settings.RATELIMIT_ENABLE, settings.RATELIMIT_POST_RATE, settings.RATELIMIT_ALLOWLIST = True, "3/m", []
    app, _, _ = _app()
    assert (
        client.post("/items", data=b'{"name": "x"}', content_type=JSON, REMOTE_ADDR="198.51.100.7").status_code == 202
    )
    answers = [asyncio.run(_post(app, b'{"name": "x"}', client="198.51.100.7")) for _ in range(3)]
    assert [status for status, _, _ in answers] == [202, 202, 429]
    _, headers, body = answers[-1]
    assert json.loads(body)["error"] == "rate_limited" and 1 <= int(headers["retry-after"]) <= 60
    assert asyncio.run(_post(app, b'{"name": "x"}', client="198.51.100.8"))[0] == 202  # another client's budget


@pytest.mark.anyio
async def test_a_post_that_waited_too_long_in_front_of_the_app_is_answered_overloaded(settings):
    settings.LOAD_SHEDDING_ENABLED = True
    app, _, publisher = _app()
    status, headers, body = await _post(app, b'{"name": "late"}', x_request_start=f"t={time.time() - 5:.3f}")
    assert status == 503 and json.loads(body)["error"] == "overloaded" and headers["retry-after"] == "1"
    assert not publisher.published


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.anyio
async def test_answers_are_counted_in_django_prometheus_series_and_hand_overs_by_reason():
    app, _, _ = _app()
    labels = {"status": "202", "view": "items", "method": "POST"}
    before = _sample("django_http_responses_total_by_status_view_method_total", **labels)
    handed = _sample("items_posts_to_django_total", reason="body")
    await _post(app, b'{"name": "counted"}')
    await _post(app, b'{"name": 5}')
    assert _sample("django_http_responses_total_by_status_view_method_total", **labels) == before + 1
    assert _sample("items_posts_to_django_total", reason="body") == handed + 1
