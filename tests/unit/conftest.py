"""Unit tests run on the embedded default: SQLite, local-memory cache, tasks executed in-process."""

import json

import pytest
from django.core.cache import caches


@pytest.fixture(autouse=True)
def _fresh_cache():
    for store in caches.all():
        store.clear()
    yield
    for store in caches.all():
        store.clear()


@pytest.fixture
def post_item(client):
    """POST /items with a JSON body (or raw bytes/str) and optional headers."""

    def post(body, *, path="/items", content_type="application/json", **headers):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False).encode()
        return client.post(path, data=data, content_type=content_type, headers=headers)

    return post


@pytest.fixture(scope="session")
def _span_exporter():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process, as project.tracing.setup does
    return exporter


@pytest.fixture
def spans(_span_exporter, settings):
    """Tracing on (OTEL_EXPORTER_OTLP_ENDPOINT set), its spans kept in memory instead of exported."""
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:4318"  # on; the provider above exports in memory
    _span_exporter.clear()
    yield _span_exporter
    _span_exporter.clear()
