"""Sheds load before it queues: 503 `overloaded` when this process already has too many requests in flight, or
when a request has already waited longer than a budget in front of the app.

It wraps Django's ASGI (and WSGI) application rather than sitting in MIDDLEWARE: under ASGI a 503 from Django
middleware still pays Django's request cycle (request signals and response close go through sync_to_async),
and measured under 5x overload those "cheap" rejections took ~0.7 s each and ate the CPU the admitted requests
needed, so goodput fell below no shedding at all. In front of Django a rejection is two sends on the loop.

Limits are per process: every gunicorn worker has its own in-flight count and its own adaptive limit, so the
host admits about WEB_CONCURRENCY times the limit shown for one worker. The in-flight limit adapts to observed
latency (a gradient limiter in the spirit of Netflix concurrency-limits and Envoy's adaptive concurrency): see
GradientLimiter. /healthz, /readyz and /metrics are never shed.
"""

import math
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from prometheus_client import Counter, Gauge

from project.errors import Overloaded, envelope_response

NEVER_SHED = frozenset({"/healthz", "/healthz/", "/readyz", "/readyz/", "/metrics", "/metrics/"})

# Gauges are summed over live workers: the host-wide in-flight count and admitted concurrency.
inflight_gauge = Gauge(
    "items_shed_inflight",
    "Requests in flight past the load shedder (summed over workers).",
    multiprocess_mode="livesum",
)
limit_gauge = Gauge(
    "items_shed_limit", "Current adaptive in-flight limit (summed over workers).", multiprocess_mode="livesum"
)
shed_total = Counter("items_shed_total", "Requests answered 503 overloaded by the load shedder, by reason.", ["reason"])

# Tunables of the limiter (trade-offs in GradientLimiter's docstring).
SAMPLE_WINDOW_S = 0.1  # how often the limit is recomputed: shorter reacts faster, longer is less noisy
SAMPLE_MIN_COUNT = 10  # completions a window needs before it counts: a few fast requests must not move the limit
SMOOTHING = 0.2  # share of the newly computed limit taken per window (EWMA): one odd window cannot halve it
MIN_GRADIENT = 0.5  # the limit shrinks by at most half per window, however bad the window looked
BASELINE_REFRESH_S = 30.0  # min-RTT baseline is re-measured this often, from lightly loaded windows only

# Time other code asked to leave out of the latency sample (e.g. the deliberate backpressure delay on POST):
# a mutable holder set per request, so a thread that runs the view (sync_to_async copies the context) adds
# to the very same list.
_excluded_s: ContextVar[list[float] | None] = ContextVar("load_shedding_excluded_s", default=None)


def exclude_from_latency(seconds: float) -> None:
    """Tell the limiter that `seconds` of this request were spent waiting on purpose, not on overload."""
    holder = _excluded_s.get()
    if holder is not None:
        holder.append(seconds)


class GradientLimiter:
    """An in-flight limit that follows latency; thread-safe, one per process.

    Every SAMPLE_WINDOW_S (with at least SAMPLE_MIN_COUNT completions) the window's mean latency `sample` is
    compared with the baseline `min_rtt` (the lowest window mean seen while lightly loaded):

        gradient  = clamp(tolerance * min_rtt / sample, MIN_GRADIENT, 1)
        new_limit = limit * gradient + sqrt(limit)          # sqrt(limit): queue headroom, lets it probe upwards
        limit     = clamp(limit + SMOOTHING * (new_limit - limit), minimum, maximum)

    While latency stays within `tolerance` times the baseline the limit grows (by the headroom), but only when
    the window actually used at least half of it; past that it shrinks, at most by half per window. The
    baseline drops as soon as a faster window is seen, and is re-measured every BASELINE_REFRESH_S from windows
    whose peak in-flight stayed at or below the floor, so it can follow a slower backend without ever being
    learned from an overloaded window.
    """

    def __init__(
        self,
        *,
        initial: int,
        minimum: int,
        maximum: int,
        tolerance: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.minimum, self.maximum, self.tolerance, self.clock = minimum, maximum, tolerance, clock
        self.limit = float(min(max(initial, minimum), maximum))
        self.inflight = 0
        self.min_rtt_s: float | None = None
        self._lock = threading.Lock()
        now = clock()
        self._window_start, self._window_sum_s, self._window_count, self._window_peak = now, 0.0, 0, 0
        self._refresh_at, self._refresh_min_s = now + BASELINE_REFRESH_S, math.inf

    def try_acquire(self) -> bool:
        with self._lock:
            if self.inflight >= int(self.limit):
                return False
            self.inflight += 1
            self._window_peak = max(self._window_peak, self.inflight)
            return True

    def release(self, latency_s: float) -> bool:
        """Count one completion; returns True when the limit was recomputed."""
        with self._lock:
            self.inflight -= 1
            self._window_sum_s += latency_s
            self._window_count += 1
            now = self.clock()
            if now - self._window_start < SAMPLE_WINDOW_S or self._window_count < SAMPLE_MIN_COUNT:
                return False
            self._update(self._window_sum_s / self._window_count, now)
            self._window_start, self._window_sum_s, self._window_count = now, 0.0, 0
            self._window_peak = self.inflight
            return True

    def _update(self, sample_s: float, now: float) -> None:
        if self._window_peak <= self.minimum:
            self._refresh_min_s = min(self._refresh_min_s, sample_s)
        if now >= self._refresh_at:
            if self._refresh_min_s < math.inf:
                self.min_rtt_s = self._refresh_min_s
            self._refresh_at, self._refresh_min_s = now + BASELINE_REFRESH_S, math.inf
        if self.min_rtt_s is None or sample_s < self.min_rtt_s:
            self.min_rtt_s = sample_s
        gradient = min(1.0, max(MIN_GRADIENT, self.tolerance * self.min_rtt_s / max(sample_s, 1e-9)))
        new_limit = self.limit * gradient + math.sqrt(self.limit)
        if new_limit > self.limit and self._window_peak < self.limit / 2:
            return  # app-limited: latency says nothing about a limit the traffic never reached
        smoothed = self.limit + SMOOTHING * (new_limit - self.limit)
        self.limit = min(float(self.maximum), max(float(self.minimum), smoothed))


def queue_time_s(header: str | None, now_s: float) -> float | None:
    """Seconds since `X-Request-Start: t=<epoch>` (Nginx's $msec: seconds with milliseconds; milli- and
    microsecond integers, as other proxies send, are recognised by their size). None when absent or invalid."""
    if not header:
        return None
    try:
        started = float(header.strip().removeprefix("t="))
    except ValueError:
        return None
    if started > 1e14:  # microseconds
        started /= 1e6
    elif started > 1e11:  # milliseconds
        started /= 1e3
    if not math.isfinite(started) or started <= 0:
        return None
    return now_s - started


class LoadShedder:
    """The shedding decision of one process, shared by the ASGI and the WSGI wrapper below."""

    def __init__(self) -> None:
        self.max_queue_time_s: float = settings.SHED_MAX_QUEUE_TIME_MS / 1000
        self.limiter = GradientLimiter(
            initial=settings.SHED_LIMIT_INITIAL,
            minimum=settings.SHED_LIMIT_MIN,
            maximum=settings.SHED_LIMIT_MAX,
            tolerance=settings.SHED_LATENCY_TOLERANCE,
        )
        limit_gauge.set(int(self.limiter.limit))
        rejection = envelope_response(Overloaded())
        self.rejection_body: bytes = rejection.content
        self.rejection_headers = [
            ("Content-Type", rejection["Content-Type"]),
            ("Retry-After", rejection["Retry-After"]),
            ("Content-Length", str(len(rejection.content))),
        ]

    def shed_reason(self, x_request_start: str | None) -> str | None:
        """None admits the request and counts it in flight (the caller must call `done`); else the reason."""
        waited_s = queue_time_s(x_request_start, time.time())
        if waited_s is not None and waited_s > self.max_queue_time_s:
            reason = "queue_time"
        elif not self.limiter.try_acquire():
            reason = "concurrency"
        else:
            inflight_gauge.inc()
            return None
        shed_total.labels(reason=reason).inc()
        return reason

    def done(self, started: float, excluded: list[float]) -> None:
        inflight_gauge.dec()
        if self.limiter.release(max(0.0, time.perf_counter() - started - sum(excluded))):
            limit_gauge.set(int(self.limiter.limit))


class ASGILoadShedding:
    """Wraps Django's ASGI application (project/asgi.py): a 503 costs microseconds on the event loop."""

    def __init__(self, app, shedder: LoadShedder | None = None) -> None:
        self.app = app
        self.shedder = shedder or LoadShedder()
        self.rejection_headers = [(k.lower().encode(), v.encode()) for k, v in self.shedder.rejection_headers]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            return await self.app(scope, receive, send)
        start_header = next((v for k, v in scope["headers"] if k == b"x-request-start"), None)
        if self.shedder.shed_reason(start_header.decode("latin-1") if start_header else None):
            await send({"type": "http.response.start", "status": 503, "headers": self.rejection_headers})
            await send({"type": "http.response.body", "body": self.shedder.rejection_body})
            return None
        started, excluded = time.perf_counter(), []
        token = _excluded_s.set(excluded)
        try:
            return await self.app(scope, receive, send)
        finally:
            _excluded_s.reset(token)
            self.shedder.done(started, excluded)


class WSGILoadShedding:
    """The same in front of Django's WSGI application (project/wsgi.py)."""

    def __init__(self, app, shedder: LoadShedder | None = None) -> None:
        self.app = app
        self.shedder = shedder or LoadShedder()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "") in NEVER_SHED:
            return self.app(environ, start_response)
        if self.shedder.shed_reason(environ.get("HTTP_X_REQUEST_START")):
            start_response("503 Service Unavailable", self.shedder.rejection_headers)
            return [self.shedder.rejection_body]
        started, excluded = time.perf_counter(), []
        token = _excluded_s.set(excluded)
        try:
            return self.app(environ, start_response)
        finally:
            _excluded_s.reset(token)
            self.shedder.done(started, excluded)


def with_load_shedding(app, *, asgi: bool):
    """The entry points' wrapper; LOAD_SHEDDING_ENABLED=0 leaves the application as it is."""
    if not settings.LOAD_SHEDDING_ENABLED:
        return app
    return ASGILoadShedding(app) if asgi else WSGILoadShedding(app)
