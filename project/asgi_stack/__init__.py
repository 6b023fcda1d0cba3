"""What wraps Django's ASGI handler, in front of Django's request cycle; assembled in project/asgi.py.

Each piece is a plain ASGI wrapper: handler.py (Django's handler with kept request threads), shedding.py with
limiter.py, pacing.py and latency.py (load shedding), request_limits.py (body and header limits before any
read), access_log.py (one line per request). The items app's own wrapper, the cache fast path, is
app/fast_path.py.
"""

from project.errors import ApiError, envelope_response

# Liveness, readiness and metrics: never shed, queued or refused for their Host (an orchestrator's probe or
# Prometheus must see the process as it is, not as overloaded).
PROBE_PATHS = frozenset({"/healthz", "/healthz/", "/readyz", "/readyz/", "/metrics", "/metrics/"})


async def send_error(send, error: ApiError, *, close: bool = False) -> None:
    """Answer with the envelope of `error` from an ASGI wrapper (no Django request cycle); `close` asks the server
    to drop the connection after it, for a request whose body is left unread."""
    response = envelope_response(error)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    headers.append((b"content-length", b"%d" % len(response.content)))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
