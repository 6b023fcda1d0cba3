"""One access line per HTTP request, written by the outermost wrapper so that fast-path hits are logged too.

uvicorn's own access line has no timing and no forwarded-for, and gunicorn's access_log_format is ignored by
uvicorn workers; this one replaces both (deploy/web/gunicorn.conf.py silences uvicorn's). Shed requests get no
line: one each would be written exactly when the worker can least afford it. They are counted in
items_shed_total{reason} and logged by Nginx.
"""

import logging
import time

from project.asgi_stack.shedding import SHED_SCOPE_KEY

logger = logging.getLogger("items.access")


class AccessLog:
    """`<peer> xff=<X-Forwarded-For> "<method> <path> HTTP/<v>" <status> <bytes> <ms>ms rid=<X-Request-ID>`."""

    def __init__(self, app) -> None:
        self.app = app

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
                _log(scope, response, (time.perf_counter() - started) * 1000)
        return None


_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def _printable(text: str) -> str:
    """What a client wrote, made unable to start a line of its own or to close our quotes: control characters,
    quotes and backslashes escaped (a decoded path may hold a newline: `/x%0aFAKE LINE`)."""
    if text.isprintable() and not any(c in text for c in _ESCAPES):
        return text
    return "".join(_ESCAPES.get(c) or (c if c.isprintable() else c.encode("unicode_escape").decode()) for c in text)


def _log(scope, response: dict[str, int], elapsed_ms: float) -> None:
    headers = dict(scope["headers"])
    client = scope.get("client") or ("-", 0)
    path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
    logger.info(
        '%s xff=%s "%s %s HTTP/%s" %s %s %.1fms rid=%s',
        client[0],
        _printable(headers.get(b"x-forwarded-for", b"-").decode("latin-1")),
        scope["method"],
        _printable(path),
        scope["http_version"],
        response["status"],
        response["bytes"],
        elapsed_ms,
        _printable(headers.get(b"x-request-id", b"-").decode("latin-1")),
    )
