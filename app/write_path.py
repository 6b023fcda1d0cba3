"""ASGI write path: POST /items accepted on the event loop, before Django, with the publish confirmed there too.

On the Django path a POST holds a request thread through Django's request cycle, DRF, and a confirm round trip
of its own (kombu's confirm mode waits after each publish), so the shedder's few running slots per worker were
spent waiting on RabbitMQ. Here a POST is validated by the same serializer (app/inputs.py), counted against the
same rate limit (app/post_limit.py), admitted by the same backpressure and bound to its Idempotency-Key by the
same records (app/services.aitem_accept), then published on the process's one confirming channel
(app/messaging/async_publish.py), in one message with the other POSTs of its event-loop turn, where hundreds of
confirms are in flight at once. A POST without an
Idempotency-Key, from a client the rate limit does not count, touches no thread at all.

Only what this path can vouch for is answered here: a JSON body the serializer accepts, an allowed Host, an
Accept that admits JSON. Everything else — a body it refuses, another Content-Type, two Idempotency-Key headers
— goes to Django with the body handed on unread, so that every error answer has one source. Errors of
acceptance itself (rate limited, queue full, broker unavailable, an idempotency conflict) are answered here in
the same envelope. POSTs are not shed by the load shedder (they hold no thread, which is what its limit
protects); a POST that already waited in front of us past SHED_MAX_QUEUE_TIME_MS is, as the shedder would, and
the publisher bounds the confirms outstanding per process (PUBLISH_MAX_IN_FLIGHT).
"""

import json
import logging
import re
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django_prometheus.middleware import Metrics
from rest_framework.exceptions import ValidationError

from app import metrics
from app.asgi_answers import header, host_allowed, scheme_allowed, security_headers
from app.http import accepts_json, json_bytes
from app.inputs import ItemInput
from app.messaging.async_publish import AsyncPublisher
from app.params import idempotency_key_from
from app.post_limit import check_post_rate, is_limited
from app.services import aitem_accept
from project import logs
from project import metrics as web_metrics
from project.asgi_stack.limiter import queue_time_s
from project.errors import ApiError, InternalError, Overloaded, envelope_response

logger = logging.getLogger(__name__)

_LIST = re.compile(r"^/items/?$")
# The media types Django's parser takes as JSON that this path takes too; anything else (another charset, a
# parameter) is for Django to accept or refuse.
_JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"})
# What DRF's view adds to every answer of /items.
_ALLOW = (b"allow", b"GET, POST, HEAD, OPTIONS")
_VIEW = "items"  # the route's name: django-prometheus's `view` label on the Django path


class WritePath:
    def __init__(self, app) -> None:
        self.app = app
        self.publisher: AsyncPublisher | None = None  # created on the worker's event loop
        self.headers = [(b"content-type", b"application/json; charset=utf-8"), _ALLOW, *security_headers()]
        self.max_queue_time_s = settings.SHED_MAX_QUEUE_TIME_MS / 1000 if settings.LOAD_SHEDDING_ENABLED else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _LIST.match(scope["path"]):
            return await self.app(scope, receive, send)
        if reason := _not_ours(scope):
            metrics.posts_to_django.labels(reason=reason).inc()
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        if body is None:
            return None  # the client went away
        fields = _valid_fields(body)
        keys = [v for n, v in scope["headers"] if n == b"idempotency-key"]
        try:
            key = idempotency_key_from(keys[0].decode("latin-1")) if len(keys) == 1 else None
        except ApiError:
            key = None  # Django answers the 400
        if fields is None or len(keys) > 1 or (keys and key is None):
            metrics.posts_to_django.labels(reason="body" if fields is None else "idempotency_key").inc()
            return await self.app(scope, _replay(body, receive), send)
        started = time.perf_counter()
        try:
            self._check_queue_time(scope)
            request = _rate_limit_request(scope)
            if is_limited(request):
                await sync_to_async(check_post_rate, thread_sensitive=False)(request)
            item_id = await aitem_accept(**fields, idempotency_key=key, publish=self._publish)
        except ApiError as exc:
            await self._answer_error(send, exc, started)
            return None
        except Exception:
            logger.exception("unhandled error accepting an item on the write path")
            await self._answer_error(send, InternalError(), started)
            return None
        body = json_bytes({"id": str(item_id), "status": "accepted"})
        headers = [
            *self.headers,
            (b"location", f"/items/{item_id}".encode()),
            (b"cache-control", b"no-store"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        _count(202, started)
        return None

    async def _publish(self, payload: dict) -> None:
        if self.publisher is None:
            self.publisher = AsyncPublisher(
                settings.BROKER_URL,
                connect_timeout_s=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
                confirm_timeout_s=settings.PUBLISH_CONFIRM_TIMEOUT_S,
                max_in_flight=settings.PUBLISH_MAX_IN_FLIGHT,
                batch_max=settings.PUBLISH_BATCH_MAX,
            )
        await self.publisher.publish(payload, request_id=logs.request_id.get())

    def _check_queue_time(self, scope) -> None:
        """Overloaded when the request already waited in front of us longer than a client should (Nginx's
        X-Request-Start), as the shedder judges every other request."""
        if self.max_queue_time_s is None:
            return
        start = header(scope, b"x-request-start")
        waited = queue_time_s(start.decode("latin-1"), time.time()) if start else None
        if waited is not None and waited > self.max_queue_time_s:
            web_metrics.shed_total.labels(reason="queue_time").inc()
            raise Overloaded()

    async def _answer_error(self, send, error: ApiError, started: float) -> None:
        response = envelope_response(error)
        headers = [
            (b"content-type", response["Content-Type"].encode()),
            *self.headers[1:],
            (b"content-length", b"%d" % len(response.content)),
        ]
        if "Retry-After" in response:
            headers.append((b"retry-after", response["Retry-After"].encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.content})
        _count(response.status_code, started)


def _not_ours(scope) -> str | None:
    """Why Django should answer this POST before its body is read (None: this path can)."""
    if (header(scope, b"content-type") or b"").lower() not in _JSON_TYPES:
        return "content_type"
    if not accepts_json(header(scope, b"accept")):
        return "accept"
    if not host_allowed(scope) or not scheme_allowed(scope):
        return "host"
    return None


async def _read_body(receive) -> bytes | None:
    """The whole body (project/asgi_stack/request_limits.py has bounded it); None on a disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive that hands Django the body already read, then whatever the server sends next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # as DRF's strict parser: NaN and Infinity are refused


def _valid_fields(body: bytes) -> dict | None:
    """The validated {"name", "description"} of a body the Django path would accept too; None for any other."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deeply to parse
        return None
    if not isinstance(data, dict):
        return None
    try:
        return dict(_input.run_validation(data))
    except ValidationError:
        return None


# One serializer for the loop's thread, validating with run_validation (which keeps no state): a new one per
# request would deep-copy its fields each time, most of the cost of validating.
_input = ItemInput()


def _rate_limit_request(scope) -> HttpRequest:
    """The request as django-ratelimit and project.net.client_ip read it: method, peer and forwarded headers."""
    request = HttpRequest()
    request.method = "POST"
    client = scope.get("client")
    request.META["REMOTE_ADDR"] = client[0] if client else ""
    for name, meta in ((b"x-forwarded-for", "HTTP_X_FORWARDED_FOR"), (b"x-real-ip", "HTTP_X_REAL_IP")):
        values = [v.decode("latin-1") for n, v in scope["headers"] if n == name]
        if values:
            request.META[meta] = ",".join(values)
    return request


def _count(status: int, started: float) -> None:
    """django-prometheus's per-view series, as its middleware counts a POST the Django path serves: the request
    rate, error-ratio and latency panels and alerts read them."""
    prometheus = Metrics.get_instance()
    prometheus.requests_by_view_transport_method.labels(_VIEW, "http", "POST").inc()
    prometheus.responses_by_status_view_method.labels(str(status), _VIEW, "POST").inc()
    prometheus.requests_latency_by_view_method.labels(_VIEW, "POST").observe(time.perf_counter() - started)
