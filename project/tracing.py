"""OpenTelemetry tracing, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then each process (a gunicorn worker, the
Celery worker) sends its spans over OTLP/HTTP from a batching thread.

Spans are made by hand at three places, not by the instrumentation packages: the request span in the outermost
ASGI wrapper (project/asgi_stack/tracing.py: fast-path hits and shed requests get one too, which Django's
instrumentation, a MiddlewareMixin, would never see), the publish (whose context travels in the message's
`traceparent` header: kombu has no instrumentation) and the worker's batch store. Off, none of that code runs.
"""

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from django.conf import settings
from opentelemetry import propagate, trace
from opentelemetry.context import Context

_provider_set = False


def enabled() -> bool:
    return bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT)


def setup(service_name: str) -> None:
    """Install the SDK's tracer provider once per process, after any fork: BatchSpanProcessor's export thread
    does not survive one (gunicorn workers and the Celery worker each call this when they start).
    OTEL_SERVICE_NAME overrides `service_name`; the sampler is the SDK's (OTEL_TRACES_SAMPLER, default
    parent-based always-on)."""
    global _provider_set
    if not enabled() or _provider_set:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint etc. from OTEL_EXPORTER_OTLP_*
    trace.set_tracer_provider(provider)
    _provider_set = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("items")


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Add the W3C `traceparent` (and `tracestate`) of the current span, or of `context`, to message headers."""
    propagate.inject(headers, context=context)


def extract(headers: Mapping[str, object] | None) -> Context:
    """The context a message's headers carry (an empty one when they carry none)."""
    return propagate.extract({k: v for k, v in (headers or {}).items() if isinstance(v, str)})
