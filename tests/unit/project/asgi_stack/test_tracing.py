"""With tracing on, every HTTP request gets a server span naming its request id, shed 503s included; off, the
wrapper is not in the pipeline at all."""

import asyncio
import time

from opentelemetry.trace import SpanKind, StatusCode

from project import tracing
from project.asgi_stack.request_id import RequestId
from project.asgi_stack.shedding import LoadShedding
from project.asgi_stack.tracing import Tracing


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _get(app, **headers: str) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def send(message):
        pass

    asyncio.run(app(scope, None, send))


def test_a_request_gets_a_server_span_with_its_status_and_request_id(spans):
    _get(RequestId(Tracing(_ok)), **{"X-Request-ID": "span-1"})
    (span,) = spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.name == "GET"
    assert span.attributes["items.request_id"] == "span-1"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/items"


def test_a_shed_503_is_traced_as_an_error(spans):
    app = RequestId(Tracing(LoadShedding(_ok)))
    _get(app, **{"X-Request-Start": f"t={time.time() - 10:.3f}"})
    (span,) = spans.get_finished_spans()
    assert span.attributes["http.response.status_code"] == 503
    assert span.status.status_code is StatusCode.ERROR


def test_a_client_traceparent_does_not_choose_our_trace(spans):
    foreign = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _get(RequestId(Tracing(_ok)), traceparent=foreign)
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != "0af7651916cd43dd8448eb211c80319c"


def test_tracing_is_off_without_an_otlp_endpoint(settings):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = ""
    assert not tracing.enabled()
    import project.asgi

    assert Tracing not in project.asgi.PIPELINE
