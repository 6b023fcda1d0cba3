"""Validates the Host header against ALLOWED_HOSTS on every request, probes excepted.

Django checks the host only when something calls request.get_host() (CommonMiddleware would); this API needs
no other part of CommonMiddleware. Health and metrics are exempt because probes and scrapers address a pod or
container by its IP, which no ALLOWED_HOSTS list can know in advance.
"""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from project.asgi_stack import PROBE_PATHS


class AllowedHostsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if request.path not in PROBE_PATHS:
            request.get_host()  # raises DisallowedHost, which Django answers with handler400
        # Returns the coroutine untouched on the async path: no await needed, no thread hop either way.
        return self.get_response(request)
