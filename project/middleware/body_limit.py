"""Refuses request bodies over ITEMS_MAX_BODY_BYTES with 413 before anything parses them.

DRF's parsers read the stream directly and so never apply Django's DATA_UPLOAD_MAX_MEMORY_SIZE; Nginx caps
bodies too, but the app must hold the line on its own when reached directly.
"""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from project.errors import BadRequest, PayloadTooLarge, envelope_response


def body_error(request: HttpRequest, max_bytes: int) -> HttpResponse | None:
    raw_length = request.META.get("CONTENT_LENGTH") or ""
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            return envelope_response(BadRequest("The Content-Length header is not a number."))
    elif request.method in ("POST", "PUT", "PATCH"):
        # No Content-Length (chunked): the ASGI handler has already buffered the body, so measure it.
        try:
            length = len(request.body)
        except RequestDataTooBig:  # Django's own check (DATA_UPLOAD_MAX_MEMORY_SIZE) got there first
            return envelope_response(PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes."))
    else:
        return None
    if length > max_bytes:
        return envelope_response(PayloadTooLarge(f"The request body is {length} bytes; the limit is {max_bytes}."))
    return None


class BodyLimitMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.max_bytes: int = settings.ITEMS_MAX_BODY_BYTES
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        return body_error(request, self.max_bytes) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return body_error(request, self.max_bytes) or await self.get_response(request)
