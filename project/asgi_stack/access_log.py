"""One access record per HTTP request, written by a wrapper near the outside so that fast-path hits are logged too.

uvicorn's own access line has no timing and no forwarded-for, and gunicorn's access_log_format is ignored by
uvicorn workers; this one replaces both (deploy/web/gunicorn.conf.py silences uvicorn's). With LOG_FORMAT=json
it is a JSON record (peer, xff, method, path, status, bytes, duration_ms, request_id); with text, one line.
Shed requests get none: one each would be written exactly when the worker can least afford it. They are counted
in items_shed_total{reason} and logged by Nginx.
"""

import logging
import time

from django.conf import settings

from project import logs
from project.asgi_stack.shedding import SHED_SCOPE_KEY

logger = logging.getLogger("items.access")


class AccessLog:
    """JSON: `{"message": "request", "peer", "xff", "method", "path", "status", "bytes", "duration_ms",
    "request_id", ...}`. Text: `<peer> xff=<X-Forwarded-For> "<method> <path> HTTP/<v>" <status> <bytes> <ms>ms
    rid=<request id>`."""

    def __init__(self, app) -> None:
        self.app = app
        self.log = _log_json if settings.LOG_FORMAT == "json" else _log_text

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        response = {"status": 0, "bytes": 0}

        async def send_and_count(message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body":
                response["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            if not scope.get(SHED_SCOPE_KEY):
                self.log(scope, response, (time.perf_counter() - started) * 1000)
        return None


def _path(scope) -> str:
    return scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")


def _log_json(scope, response: dict[str, int], elapsed_ms: float) -> None:
    # No escaping here: the JSON encoder escapes what a client wrote.
    xff = next((v for k, v in scope["headers"] if k == b"x-forwarded-for"), None)
    client = scope.get("client") or (None, 0)
    logger.info(
        "request",
        extra={
            "peer": client[0],
            "xff": xff.decode("latin-1") if xff is not None else None,
            "method": scope["method"],
            "path": _path(scope),
            "status": response["status"],
            "bytes": response["bytes"],
            "duration_ms": round(elapsed_ms, 1),
            "request_id": logs.request_id.get(),
        },
    )


_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def _printable(text: str) -> str:
    """What a client wrote, made unable to start a line of its own or to close our quotes: control characters,
    quotes and backslashes escaped (a decoded path may hold a newline: `/x%0aFAKE LINE`)."""
    if text.isprintable() and not any(c in text for c in _ESCAPES):
        return text
    return "".join(_ESCAPES.get(c) or (c if c.isprintable() else c.encode("unicode_escape").decode()) for c in text)


def _log_text(scope, response: dict[str, int], elapsed_ms: float) -> None:
    headers = dict(scope["headers"])
    client = scope.get("client") or ("-", 0)
    logger.info(
        '%s xff=%s "%s %s HTTP/%s" %s %s %.1fms rid=%s',
        client[0],
        _printable(headers.get(b"x-forwarded-for", b"-").decode("latin-1")),
        scope["method"],
        _printable(_path(scope)),
        scope["http_version"],
        response["status"],
        response["bytes"],
        elapsed_ms,
        _printable(logs.request_id.get() or "-"),
    )
