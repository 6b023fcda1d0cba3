"""Django and django-prometheus middleware, minus the thread hop per request on the async path.

`MiddlewareMixin` runs `process_request`/`process_response` through `sync_to_async` under ASGI: two thread
hops per middleware per request, the largest cost of a cheap async view. The hooks of the classes below only
set headers and bump in-memory counters (nothing blocks), so calling them inline on the event loop is safe.
The sync path is unchanged.
"""

from collections.abc import Callable

from django.middleware.clickjacking import XFrameOptionsMiddleware as DjangoXFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django_prometheus.middleware import PrometheusAfterMiddleware as DjangoPrometheusAfterMiddleware
from django_prometheus.middleware import PrometheusBeforeMiddleware as DjangoPrometheusBeforeMiddleware


class InlineHooksMixin:
    get_response: Callable

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class PrometheusBeforeMiddleware(InlineHooksMixin, DjangoPrometheusBeforeMiddleware):
    pass


class SecurityMiddleware(InlineHooksMixin, DjangoSecurityMiddleware):
    pass


class XFrameOptionsMiddleware(InlineHooksMixin, DjangoXFrameOptionsMiddleware):
    pass


class PrometheusAfterMiddleware(InlineHooksMixin, DjangoPrometheusAfterMiddleware):
    pass
