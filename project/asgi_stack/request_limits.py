"""What a request may send, held before anything reads it: its body (ITEMS_MAX_BODY_BYTES), its headers' count
and size. Nginx holds the same lines, but the app is also reached directly (compose's `web:8000`, the native
stack's gunicorn, `make run`).

Django's ASGI handler reads the whole body (spooled to disk past 2.5 MB) before any middleware runs, so a
Content-Length over the limit is answered 413 here without reading a byte of it. A body without one (chunked) is
read here up to the limit and handed on whole with the Content-Length it turned out to have: DRF reads a
request with no Content-Length as empty.
"""

from django.conf import settings

from project.asgi_stack import send_error
from project.errors import ApiError, HeadersTooLarge, PayloadTooLarge

# Generous for any real client (Nginx allows 4 x 8 KiB of header lines by default), small beside what a client
# can make a server parse.
MAX_HEADER_COUNT = 100
MAX_HEADER_BYTES = 32 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Disconnected:
    """The client went away before its body was complete: nothing to answer."""


class RequestLimits:
    def __init__(self, app) -> None:
        self.app = app
        self.max_body_bytes: int = settings.ITEMS_MAX_BODY_BYTES

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope["headers"]
        if len(headers) > MAX_HEADER_COUNT or sum(len(n) + len(v) for n, v in headers) > MAX_HEADER_BYTES:
            too_many = f"The request's headers exceed {MAX_HEADER_COUNT} fields or {MAX_HEADER_BYTES // 1024} KiB."
            return await send_error(send, HeadersTooLarge(too_many), close=True)
        length = next((v for n, v in headers if n == b"content-length"), None)
        if length is not None:
            if length.isdigit() and int(length) > self.max_body_bytes:
                return await send_error(send, self._too_large(f"{int(length)} bytes"), close=True)
            return await self.app(scope, receive, send)  # a malformed one is Django's 400 (BodyLimitMiddleware)
        if scope["method"] not in _BODY_METHODS and not any(n == b"transfer-encoding" for n, _ in headers):
            return await self.app(scope, receive, send)
        body = await self._read_body(receive)
        if body is None:
            return await send_error(send, self._too_large("over the limit"), close=True)
        if isinstance(body, Disconnected):
            return None
        with_length = {**scope, "headers": [*headers, (b"content-length", b"%d" % len(body))]}
        return await self.app(with_length, _replay(body, receive), send)

    async def _read_body(self, receive) -> bytes | Disconnected | None:
        """The whole body; None past the limit (the rest is never read); Disconnected if the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: str) -> ApiError:
        return PayloadTooLarge(f"The request body is {size}; the limit is {self.max_body_bytes} bytes.")


def _replay(body: bytes, receive):
    """The body read here as one message, then the server's own messages (Django listens on for a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
