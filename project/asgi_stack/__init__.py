"""What wraps Django's ASGI handler, in front of Django's request cycle; assembled in project/asgi.py.

Each piece is a plain ASGI wrapper: handler.py (Django's handler with kept request threads), shedding.py with
limiter.py, pacing.py and latency.py (load shedding), access_log.py (one line per request). The items app's own
wrapper, the cache fast path, is app/fast_path.py.
"""

# Liveness, readiness and metrics: never shed, queued or refused for their Host (an orchestrator's probe or
# Prometheus must see the process as it is, not as overloaded).
PROBE_PATHS = frozenset({"/healthz", "/healthz/", "/readyz", "/readyz/", "/metrics", "/metrics/"})
