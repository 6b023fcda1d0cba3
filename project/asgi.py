"""ASGI entry point (gunicorn with uvicorn workers in production, uvicorn alone for `make run`), and the one place
that says what wraps Django's handler, outermost first."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from project.asgi_stack.handler import get_asgi_application  # Django's, with kept request threads

django_application = get_asgi_application()

from project.startup import refuse_misconfiguration  # noqa: E402  (needs the apps loaded above)

refuse_misconfiguration()

from asgiref.typing import ASGIApplication  # noqa: E402
from django.conf import settings  # noqa: E402

from app import cache  # noqa: E402
from app.fast_path import FastPath  # noqa: E402
from app.write_path import WritePath  # noqa: E402
from project import tracing  # noqa: E402
from project.asgi_stack.access_log import AccessLog  # noqa: E402
from project.asgi_stack.request_id import RequestId  # noqa: E402
from project.asgi_stack.request_limits import RequestLimits  # noqa: E402
from project.asgi_stack.shedding import LoadShedding  # noqa: E402
from project.asgi_stack.tracing import Tracing  # noqa: E402

# Each gunicorn worker imports this module after the fork: its own span exporter thread (when tracing is on).
tracing.setup("items-web")

PIPELINE = [
    # X-Request-ID (Nginx's, or made here) in every log record of the request and on every response, 503s too.
    RequestId,
    # A span per request, when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    Tracing if tracing.enabled() else None,
    # One line per request, fast-path hits included (shed requests are only counted).
    AccessLog if settings.ACCESS_LOG else None,
    # A body over the limit refused before it is read, a chunked one measured and given its Content-Length,
    # headers bounded in count and size: the same lines as Nginx's, for a client that reaches us directly.
    RequestLimits,
    # Fresh cache hits of GET /items*, answered before Django: the cheapest answer there is, never shed.
    FastPath if cache.enabled() else None,
    # POST /items validated, admitted and published on the event loop, confirms pipelined on one channel per
    # process: no thread, so never shed (the embedded default has no broker: its POSTs go to Django).
    WritePath if settings.BROKER_URL and settings.WRITE_PATH_ENABLED else None,
    # Admit, queue on the event loop, or answer 503 overloaded before Django pays for a request cycle.
    LoadShedding if settings.LOAD_SHEDDING_ENABLED else None,
]

application: ASGIApplication = django_application
for wrapper in reversed([w for w in PIPELINE if w is not None]):
    application = wrapper(application)
