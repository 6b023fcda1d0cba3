"""A server span per HTTP request (only with tracing on: project/tracing.py), from just inside the request id, so
that fast-path hits and shed 503s are traced too and every span names its request id.

The span starts a trace of its own: a `traceparent` from the client is not followed, since anyone on the internet
could otherwise choose our trace ids and sampling decisions. The publish of a POST is its child, and the worker's
store of that item is the child of the publish (the `traceparent` message header).
"""

from opentelemetry.trace import SpanKind, Status, StatusCode

from project import logs, tracing


class Tracing:
    def __init__(self, app) -> None:
        self.app = app
        self.tracer = tracing.tracer()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        attributes = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "items.request_id": logs.request_id.get() or "",
        }
        with self.tracer.start_as_current_span(scope["method"], kind=SpanKind.SERVER, attributes=attributes) as span:

            async def send_and_record(message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_and_record)
        return None
