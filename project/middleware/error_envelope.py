"""Gives every error response the JSON envelope, whoever produced it (Django, a library or us)."""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from project.errors import envelope_response, error_for_status

# Headers of the original answer that still mean something on the envelope.
_KEPT_HEADERS = ("Allow", "Retry-After")


def _enveloped(response: HttpResponse) -> HttpResponse:
    if response.status_code < 400 or response.streaming:
        return response
    if response.get("Content-Type", "").startswith("application/json"):
        return response  # ours already, or a JSON error we trust
    envelope = envelope_response(error_for_status(response.status_code))
    for header in _KEPT_HEADERS:
        if header in response:
            envelope[header] = response[header]
    return envelope


class ErrorEnvelopeMiddleware:
    """Rewrites non-JSON error bodies (Django's HTML 404/405/500, technical pages under DEBUG) as the envelope."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        return _enveloped(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _enveloped(await self.get_response(request))
