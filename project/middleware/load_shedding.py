"""Sheds load before it queues: 503 `overloaded` when a request would wait too long for its turn, or already
has waited too long in front of the app.

Two stages, per process:
- a limit on the requests *running* in Django at once. Under ASGI every running request holds a thread of its
  own (Django runs each request's sync code in a thread sensitive context; project/request_threads.py keeps
  those threads for later requests), and all of them contend for one GIL with the event loop. Measured on 2
  cores: with ~100 running per worker, the loop waited ~50 ms for the GIL, so even a rejection took 40-60 ms,
  and each rejection cost ~300 us of CPU.
  A handful running per worker keeps the CPU as busy and answers both the admitted and the rejected faster.
  The limit adapts to the service time (a gradient limiter in the spirit of Netflix concurrency-limits and
  Envoy's adaptive concurrency): see GradientLimiter.
- a FIFO of requests waiting for a slot, on the event loop (a future each: no thread, no Django). A request
  joins it only if its predicted wait (queue position x mean service time / limit, plus the time it already
  spent between Nginx and us, from `X-Request-Start`) fits in SHED_QUEUE_TARGET_MS; otherwise it is answered
  at once. One that waits past SHED_MAX_QUEUE_TIME_MS anyway is answered then.

It wraps Django's ASGI (and WSGI) application rather than sitting in MIDDLEWARE: under ASGI a 503 from Django
middleware still pays Django's request cycle (a thread, request signals through sync_to_async). In front of
Django a rejection is two sends on the loop. /healthz, /readyz and /metrics are never shed or queued.

A rejection is cheap, not free, and a client that re-sends it at once comes straight back. So a 503 is held
back (a timer on the loop) when its client connection re-sent within Retry-After of its last 503
(RetryTarpit), or, for everyone else, past a pace of rejections per second (RejectionPacer).

Limits are per process: every gunicorn worker has its own queue and its own adaptive limit, so the host runs
about WEB_CONCURRENCY times the limit shown for one worker. The WSGI wrapper has no queue (a waiting thread is
the very cost the queue avoids): over the limit it sheds.
"""

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from prometheus_client import Counter, Gauge

from project.client_ip import is_trusted_proxy
from project.errors import Overloaded, envelope_response

NEVER_SHED = frozenset({"/healthz", "/healthz/", "/readyz", "/readyz/", "/metrics", "/metrics/"})

# Gauges are summed over live workers: host-wide running requests, queued requests and running limit.
inflight_gauge = Gauge(
    "items_shed_inflight",
    "Requests running past the load shedder (summed over workers).",
    multiprocess_mode="livesum",
)
queued_gauge = Gauge(
    "items_shed_queued",
    "Requests waiting in the load shedder's queue for a slot (summed over workers).",
    multiprocess_mode="livesum",
)
limit_gauge = Gauge(
    "items_shed_limit",
    "Current adaptive limit of running requests (summed over workers).",
    multiprocess_mode="livesum",
)
shed_total = Counter("items_shed_total", "Requests answered 503 overloaded by the load shedder, by reason.", ["reason"])
paced_total = Counter(
    "items_shed_paced_total",
    "Shed requests whose 503 was held back: their connection re-sent within Retry-After of its last 503, or "
    "rejections ran over SHED_REJECTIONS_PER_S.",
)

# Tunables of the limiter (trade-offs in GradientLimiter's docstring).
SAMPLE_WINDOW_S = 0.1  # how often the limit is recomputed: shorter reacts faster, longer is less noisy
SAMPLE_MIN_COUNT = 10  # completions a window needs before it counts: a few fast requests must not move the limit
SMOOTHING = 0.2  # share of the newly computed limit taken per window (EWMA): one odd window cannot halve it
MIN_GRADIENT = 0.5  # the limit shrinks by at most half per window, however bad the window looked
BASELINE_REFRESH_S = 30.0  # the min-RTT baseline is re-measured this often, with the limit held at the floor
# Rejections answered at once beyond the pace: this many seconds' worth of the rate. Clients that honour
# Retry-After come back in waves (all told "1" at about the same time); the burst lets a wave through unheld.
REJECTION_BURST_S = 0.5
SERVICE_SMOOTHING = 0.05  # weight of one completion in the mean service time that predicts a queued wait
# The ASGI scope key a shed request carries (gunicorn.conf.py leaves it out of the access log).
SHED_SCOPE_KEY = "items.shed_reason"
# The client's own connection, as the front Nginx numbers it ($connection): believed from trusted proxies only.
CLIENT_CONNECTION_HEADER = b"x-client-connection"

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
    the window actually used at least half of it; past that it shrinks, at most by half per window.

    The baseline is measured with the limit held at the floor, as Envoy's adaptive concurrency does: at start
    and every BASELINE_REFRESH_S, at most `minimum` requests run until one whole window ran with no more than
    that in flight; its mean becomes `min_rtt` (a slower backend is followed, not only a faster one), and the
    limit resumes where it was. In between, a faster window lowers it at once. Why forced: a baseline taken from
    whatever windows come along is learned under load when a worker starts into traffic. Measured: learned at
    ~16 in flight, it let the limit grow to ~40 per worker, where the event loop waited for the GIL among 40
    threads (a 503 took 33 ms, against 4 ms with 8 running, and the throughput was no better).
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
        self.service_s: float | None = None  # mean service time (EWMA over completions)
        self.measuring_baseline = True  # the limit is held at the floor until min_rtt is measured
        self._lock = threading.Lock()
        now = clock()
        self._window_start, self._window_sum_s, self._window_count, self._window_peak = now, 0.0, 0, 0
        self._refresh_at = now + BASELINE_REFRESH_S

    @property
    def cap(self) -> int:
        """Requests that may run now: the floor while the baseline is measured, else the limit."""
        return self.minimum if self.measuring_baseline else int(self.limit)

    def try_acquire(self) -> bool:
        with self._lock:
            if self.inflight >= self.cap:
                return False
            self.inflight += 1
            self._window_peak = max(self._window_peak, self.inflight)
            return True

    def release(self, latency_s: float) -> bool:
        """Count one completion; returns True when the limit was recomputed."""
        with self._lock:
            self.inflight -= 1
            if self.service_s is None:
                self.service_s = latency_s
            else:
                self.service_s += SERVICE_SMOOTHING * (latency_s - self.service_s)
            self._window_sum_s += latency_s
            self._window_count += 1
            now = self.clock()
            if now - self._window_start < SAMPLE_WINDOW_S or self._window_count < SAMPLE_MIN_COUNT:
                return False
            self._update(self._window_sum_s / self._window_count, now)
            self._window_start, self._window_sum_s, self._window_count = now, 0.0, 0
            self._window_peak = self.inflight
            return True

    def abandon(self) -> None:
        """Give back a slot that never served (its waiter went away): no latency sample."""
        with self._lock:
            self.inflight -= 1

    def _update(self, sample_s: float, now: float) -> None:
        if self.measuring_baseline:
            # Requests admitted before the measurement began may still be running: only a window that ran
            # wholly at the floor measures it.
            if self._window_peak <= self.minimum:
                self.min_rtt_s, self.measuring_baseline = sample_s, False
                self._refresh_at = now + BASELINE_REFRESH_S
            return
        if self.min_rtt_s is None or sample_s < self.min_rtt_s:
            self.min_rtt_s = sample_s
        if now >= self._refresh_at:
            self.measuring_baseline = True
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
        self.queue_target_s: float = min(settings.SHED_QUEUE_TARGET_MS, settings.SHED_MAX_QUEUE_TIME_MS) / 1000
        self.limiter = GradientLimiter(
            initial=settings.SHED_LIMIT_INITIAL,
            minimum=settings.SHED_LIMIT_MIN,
            maximum=settings.SHED_LIMIT_MAX,
            tolerance=settings.SHED_LATENCY_TOLERANCE,
        )
        limit_gauge.set(self.limiter.cap)
        rejection = envelope_response(Overloaded())
        self.rejection_body: bytes = rejection.content
        self.retry_after_s = int(rejection["Retry-After"])
        self.rejection_headers = [
            ("Content-Type", rejection["Content-Type"]),
            ("Retry-After", rejection["Retry-After"]),
            ("Content-Length", str(len(rejection.content))),
        ]

    def waited_s(self, x_request_start: str | None) -> float:
        """Seconds this request already spent between Nginx and us (0 without a usable header)."""
        waited = queue_time_s(x_request_start, time.time())
        return waited if waited is not None and waited > 0 else 0.0

    def predicted_wait_s(self, position: int) -> float:
        """How long the request `position` places back in the queue should wait for a slot."""
        service_s = self.limiter.service_s
        if service_s is None:
            return 0.0  # nothing measured yet: the queue's own timeout still bounds the wait
        return position * service_s / max(int(self.limiter.limit), 1)

    def try_start(self) -> bool:
        """Take a slot if one is free; the caller must call `done` (or `abandon`) for it."""
        if self.limiter.try_acquire():
            inflight_gauge.inc()
            return True
        return False

    def shed(self, reason: str) -> None:
        shed_total.labels(reason=reason).inc()

    def shed_reason(self, x_request_start: str | None) -> str | None:
        """No queue (the WSGI path): None admits the request (the caller must call `done`); else the reason."""
        if self.waited_s(x_request_start) > self.max_queue_time_s:
            reason = "queue_time"
        elif not self.try_start():
            reason = "concurrency"
        else:
            return None
        self.shed(reason)
        return reason

    def done(self, started: float, excluded: list[float]) -> None:
        inflight_gauge.dec()
        if self.limiter.release(max(0.0, time.perf_counter() - started - sum(excluded))):
            limit_gauge.set(self.limiter.cap)

    def abandon(self) -> None:
        inflight_gauge.dec()
        self.limiter.abandon()


class ASGILoadShedding:
    """Wraps Django's ASGI application (project/asgi.py): admits, queues on the loop, or answers 503 at once."""

    def __init__(self, app, shedder: LoadShedder | None = None) -> None:
        self.app = app
        self.shedder = shedder or LoadShedder()
        self.rejection_headers = [(k.lower().encode(), v.encode()) for k, v in self.shedder.rejection_headers]
        # Futures of the requests waiting for a slot, oldest first; each resolves True (slot taken for it) or
        # False (its wait ran out). A future whose wait ran out stays until it reaches the head, so the live
        # waiters are counted apart. Only the event loop's thread touches either.
        self.waiting: deque[asyncio.Future] = deque()
        self.queued = 0
        self.pacer = RejectionPacer(settings.SHED_REJECTIONS_PER_S, max_delay_s=float(self.shedder.retry_after_s))
        self.tarpit = RetryTarpit(float(self.shedder.retry_after_s))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_SHED:
            return await self.app(scope, receive, send)
        start_header = next((v for k, v in scope["headers"] if k == b"x-request-start"), None)
        reason = await self.admit(self.shedder.waited_s(start_header.decode("latin-1") if start_header else None))
        if reason:
            self.shedder.shed(reason)
            scope[SHED_SCOPE_KEY] = reason
            connection, now = client_connection(scope), time.monotonic()
            # A connection that ignored its last Retry-After waits it out; the pace is for everyone else.
            if delay_s := self.tarpit.delay_s(connection, now) or self.pacer.delay_s(now):
                paced_total.inc()
                await asyncio.sleep(delay_s)
            await send({"type": "http.response.start", "status": 503, "headers": self.rejection_headers})
            await send({"type": "http.response.body", "body": self.shedder.rejection_body})
            self.tarpit.answered(connection, time.monotonic())
            return None
        started, excluded = time.perf_counter(), []
        token = _excluded_s.set(excluded)
        try:
            return await self.app(scope, receive, send)
        finally:
            _excluded_s.reset(token)
            self.shedder.done(started, excluded)
            self.hand_over_slots()

    async def admit(self, waited_s: float) -> str | None:
        """None once a slot is held; else why the request is shed."""
        budget_s = self.shedder.max_queue_time_s - waited_s
        if budget_s < 0:
            return "queue_time"
        self.hand_over_slots()  # drops waiters whose time ran out; a free slot goes to those still waiting first
        if not self.waiting and self.shedder.try_start():
            return None
        # Not against the whole budget: the prediction is a mean, and one that only just fit would run out of
        # time about half the time, answered after a whole budget of waiting instead of at once.
        if waited_s + self.shedder.predicted_wait_s(self.queued + 1) > self.shedder.queue_target_s:
            return "concurrency"
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        timer = loop.call_later(budget_s, _expire, turn)
        self.waiting.append(turn)
        self.queued += 1
        queued_gauge.inc()
        try:
            got_slot = await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.shedder.abandon()
                self.hand_over_slots()
            raise
        finally:
            timer.cancel()
            self.queued -= 1
            queued_gauge.dec()
        return None if got_slot else "queue_time"

    def hand_over_slots(self) -> None:
        """Give free slots to the oldest waiters (after a completion, which may also have raised the limit)."""
        while self.waiting:
            turn = self.waiting[0]
            if turn.done():  # its wait ran out, or it was cancelled
                self.waiting.popleft()
                continue
            if not self.shedder.try_start():
                return
            self.waiting.popleft()
            turn.set_result(True)


class RejectionPacer:
    """Paces 503s past `per_s` a second (a GCRA: the rate plus a burst of REJECTION_BURST_S worth).

    A rejection is cheap, not free: parsing, the answer and the proxy's side of it cost ~0.1-0.3 ms of CPU, from
    the same cores and (for the parsing and the answer) under the same GIL as the requests being served. Clients
    that re-send at once (no back-off, no Retry-After) come back as fast as they are answered, so answering them
    faster only buys more of them: measured on 2 cores, 500 such connections made ~7,000 rejections a second and
    left a fraction of the goodput. Past the pace a 503 is held back (a timer on the loop, no CPU) for at most
    `max_delay_s`, the Retry-After it carries. Clients that back off stay under the pace and are answered at once.
    Measured at 5x overload (cache-miss GET, 2 cores, single runs): goodput/peak 0.88 and 0.88 with 250/s and a
    0.5 s burst per worker, 0.64 and 0.91 with 500/s and 0.1 s; clients honouring Retry-After got their 503s in a
    median 4 ms either way.
    """

    def __init__(self, per_s: int, *, max_delay_s: float, burst_s: float = REJECTION_BURST_S) -> None:
        self.interval_s = 1.0 / per_s if per_s > 0 else 0.0
        self.burst_s = burst_s
        self.max_delay_s = max_delay_s
        self._tat = 0.0  # theoretical arrival time of the next rejection at the pace

    def delay_s(self, now: float) -> float:
        """How long the rejection arriving at `now` should be held back (0: answer at once)."""
        if not self.interval_s:
            return 0.0
        tat = max(self._tat, now)
        delay = min(max(0.0, tat - self.burst_s - now), self.max_delay_s)
        self._tat = min(tat, now + self.burst_s + self.max_delay_s) + self.interval_s
        return delay


class RetryTarpit:
    """Holds the 503 of a client connection that re-sent within Retry-After of its last 503, until that time.

    A client that honours Retry-After is never held here, however many others storm. One that re-sends at once
    gets its next 503 when it should have come back: one rejection per Retry-After per connection, instead of
    as many as the pace lets through, each costing CPU the admitted requests need. Measured at 5x overload with
    wrk's closed loop (2 cores, 2 paired rounds): rejections 15,200 -> 12,000-13,600 per 30 s, goodput/peak
    0.90-0.99 (GET) and 0.92-1.00 (POST) against 0.93 and 0.88, clients that back off still a median 2-3 ms.
    A connection is keyed as `client_connection` says; entries live one Retry-After.
    """

    # A client that waited its Retry-After (counted from when it read the 503, a little after we sent it) may
    # come back a hair early by our clock: not held.
    SLACK_S = 0.1

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.last_sent: dict[object, float] = {}  # connection -> when its last 503 went out, oldest first

    def delay_s(self, connection: object, now: float) -> float:
        sent = self.last_sent.get(connection)
        if sent is None or now - sent >= self.retry_after_s - self.SLACK_S:
            return 0.0
        return sent + self.retry_after_s - now

    def answered(self, connection: object, now: float) -> None:
        self.last_sent.pop(connection, None)
        self.last_sent[connection] = now  # re-inserted: the dict stays in the order the 503s went out
        while self.last_sent:
            oldest = next(iter(self.last_sent))
            if now - self.last_sent[oldest] < self.retry_after_s:
                break
            del self.last_sent[oldest]


def client_connection(scope) -> object:
    """The client's connection: the front Nginx's number for it (X-Client-Connection) when the peer is a trusted
    proxy, else the peer's own address and port (a client talking to gunicorn directly)."""
    peer = tuple(scope.get("client") or ("", 0))
    if is_trusted_proxy(peer[0]):
        number = next((v for k, v in scope["headers"] if k == CLIENT_CONNECTION_HEADER), None)
        if number:
            return number
    return peer


def _expire(turn: asyncio.Future) -> None:
    if not turn.done():
        turn.set_result(False)


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
