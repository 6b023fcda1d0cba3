"""Load shedding, per process: 503 `overloaded` when a request would wait too long for its turn, or already
has waited too long in front of the app.

Two stages:
- a limit on the requests *running* in Django at once (project/asgi_stack/limiter.py). Under ASGI each running
  request holds a thread of its own, and all of them contend for one GIL with the event loop, so a handful
  running per worker keeps the CPU as busy and answers both the admitted and the rejected faster;
- a FIFO of requests waiting for a slot, on the event loop (a future each: no thread, no Django). A request
  joins it unless the queue's *measured* delay — the shortest wait of the requests that left it in the last
  QUEUE_DELAY_WINDOW_S, or the age of its oldest waiter if that is longer — plus the time it already spent between
  Nginx and us (`X-Request-Start`) is past SHED_QUEUE_TARGET_MS; then it is answered at once. One that waits past
  SHED_MAX_QUEUE_TIME_MS anyway is answered then.

The queue's delay is measured, not predicted (CoDel's standing-queue idea): a closed loop of a hundred clients
keeps a queue whose every request waits a steady ~0.2 s — ordinary load, served in time — while a prediction from
the mean service time, noisy on a shared machine, shed some of them. Only a delay that *every* request of a
window saw (the shortest one) says the queue stands too long. The limiter's latency samples leave out the time a
request spent waiting on the database (latency.py), so the running limit follows the CPU the requests contend
for, not a slow query.

It wraps Django's ASGI handler (project/asgi.py) rather than sitting in MIDDLEWARE: a 503 from Django middleware
still pays Django's request cycle (a thread, request signals through sync_to_async); in front of Django a
rejection is two sends on the loop. How the 503s go out is project/asgi_stack/pacing.py. Probe paths
(PROBE_PATHS) are never shed or queued.

Limits are per process: every gunicorn worker has its own queue and its own adaptive limit, so the host runs
about WEB_CONCURRENCY times the limit shown for one worker. The measurements behind the design and its defaults:
docs/decisions/001-load-shedding.md.
"""

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings

from project import metrics
from project.asgi_stack import PROBE_PATHS, latency
from project.asgi_stack.limiter import GradientLimiter, queue_time_s
from project.asgi_stack.pacing import RejectionPacer, RetryTarpit, client_connection
from project.errors import Overloaded, envelope_response

# The ASGI scope key a shed request carries (project/asgi_stack/access_log.py leaves it out of the log).
SHED_SCOPE_KEY = "items.shed_reason"
# How far back the queue's delay is measured: CoDel's interval, long enough for tens of requests to leave the
# queue at the peak, short enough that a queue which stops standing admits again within a tenth of a second.
QUEUE_DELAY_WINDOW_S = 0.1


class QueueDelay:
    """The delay of the shedder's queue: the shortest wait of the requests that left it in the last window."""

    def __init__(self, window_s: float = QUEUE_DELAY_WINDOW_S) -> None:
        self.window_s = window_s
        self._window_start = 0.0
        self._window_min: float | None = None  # this window's shortest wait so far
        self._last_min: float | None = None  # the previous window's

    def left(self, waited_s: float, now: float) -> None:
        """A request got its slot after waiting `waited_s`."""
        self._roll(now)
        self._window_min = waited_s if self._window_min is None else min(self._window_min, waited_s)

    def standing_s(self, now: float, oldest_age_s: float) -> float:
        """The delay a newcomer should expect: no less than the oldest waiter has already waited."""
        self._roll(now)
        measured = [m for m in (self._last_min, self._window_min) if m is not None]
        return max(min(measured) if measured else 0.0, oldest_age_s)

    def _roll(self, now: float) -> None:
        if now - self._window_start >= self.window_s:
            # A window with nobody leaving keeps no figure: the oldest waiter's age speaks for it.
            self._last_min = self._window_min if now - self._window_start < 2 * self.window_s else None
            self._window_start, self._window_min = now, None


@dataclass
class _Waiter:
    turn: asyncio.Future  # resolves True (slot taken for it) or False (its wait ran out)
    since: float  # time.monotonic() when it joined


class LoadShedder:
    """The shedding decision of one process: the limiter, the queue's budget and the rejection it answers."""

    def __init__(self) -> None:
        self.max_queue_time_s: float = settings.SHED_MAX_QUEUE_TIME_MS / 1000
        self.queue_target_s: float = min(settings.SHED_QUEUE_TARGET_MS, settings.SHED_MAX_QUEUE_TIME_MS) / 1000
        self.limiter = GradientLimiter(
            initial=settings.SHED_LIMIT_INITIAL,
            minimum=settings.SHED_LIMIT_MIN,
            maximum=settings.SHED_LIMIT_MAX,
            tolerance=settings.SHED_LATENCY_TOLERANCE,
        )
        metrics.shed_limit.set(self.limiter.cap)
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

    def try_start(self) -> bool:
        """Take a slot if one is free; the caller must call `done` (or `abandon`) for it."""
        if self.limiter.try_acquire():
            metrics.shed_inflight.inc()
            return True
        return False

    def shed(self, reason: str) -> None:
        metrics.shed_total.labels(reason=reason).inc()

    def done(self, started: float, excluded: list[float]) -> None:
        metrics.shed_inflight.dec()
        if self.limiter.release(max(0.0, time.perf_counter() - started - sum(excluded))):
            metrics.shed_limit.set(self.limiter.cap)

    def abandon(self) -> None:
        metrics.shed_inflight.dec()
        self.limiter.abandon()


class LoadShedding:
    """ASGI wrapper around Django's handler: admits, queues on the loop, or answers 503 at once."""

    def __init__(self, app, shedder: LoadShedder | None = None) -> None:
        self.app = app
        self.shedder = shedder or LoadShedder()
        self.rejection_headers = [(k.lower().encode(), v.encode()) for k, v in self.shedder.rejection_headers]
        # The requests waiting for a slot, oldest first. One whose wait ran out stays until it reaches the head,
        # so the live waiters are counted apart. Only the event loop's thread touches these.
        self.waiting: deque[_Waiter] = deque()
        self.queued = 0
        self.delay = QueueDelay()
        self.pacer = RejectionPacer(settings.SHED_REJECTIONS_PER_S, max_delay_s=float(self.shedder.retry_after_s))
        self.tarpit = RetryTarpit(float(self.shedder.retry_after_s))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            return await self.app(scope, receive, send)
        start_header = next((v for k, v in scope["headers"] if k == b"x-request-start"), None)
        reason = await self.admit(self.shedder.waited_s(start_header.decode("latin-1") if start_header else None))
        if reason:
            self.shedder.shed(reason)
            scope[SHED_SCOPE_KEY] = reason
            connection, now = client_connection(scope), time.monotonic()
            # A connection that ignored its last Retry-After waits it out; the pace is for everyone else.
            if delay_s := self.tarpit.delay_s(connection, now) or self.pacer.delay_s(now):
                metrics.shed_paced_total.inc()
                await asyncio.sleep(delay_s)
            await send({"type": "http.response.start", "status": 503, "headers": self.rejection_headers})
            await send({"type": "http.response.body", "body": self.shedder.rejection_body})
            self.tarpit.answered(connection, time.monotonic())
            return None
        started = time.perf_counter()
        excluded, token = latency.start_measuring()
        try:
            return await self.app(scope, receive, send)
        finally:
            latency.excluded_s.reset(token)
            self.shedder.done(started, excluded)
            self.hand_over_slots()

    async def admit(self, waited_s: float) -> str | None:
        """None once a slot is held; else why the request is shed."""
        budget_s = self.shedder.max_queue_time_s - waited_s
        if budget_s < 0:
            return "queue_time"
        self.hand_over_slots()  # drops waiters whose time ran out; a free slot goes to those still waiting first
        if not self.waiting and self.shedder.try_start():
            self.delay.left(0.0, time.monotonic())  # no queue to wait in: it stands no longer
            return None
        # Against the target, not the whole budget: a newcomer waits about as long as those before it, and one
        # that only just fit would run out of time about half the time, answered after a whole budget of waiting.
        now = time.monotonic()
        oldest = next((w for w in self.waiting if not w.turn.done()), None)
        standing_s = self.delay.standing_s(now, now - oldest.since if oldest else 0.0)
        if waited_s + standing_s > self.shedder.queue_target_s:
            return "concurrency"
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        timer = loop.call_later(budget_s, _expire, turn)
        self.waiting.append(_Waiter(turn, now))
        self.queued += 1
        metrics.shed_queued.inc()
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
            metrics.shed_queued.dec()
        return None if got_slot else "queue_time"

    def hand_over_slots(self) -> None:
        """Give free slots to the oldest waiters (after a completion, which may also have raised the limit)."""
        while self.waiting:
            waiter = self.waiting[0]
            if waiter.turn.done():  # its wait ran out, or it was cancelled
                self.waiting.popleft()
                continue
            if not self.shedder.try_start():
                return
            self.waiting.popleft()
            now = time.monotonic()
            self.delay.left(now - waiter.since, now)
            waiter.turn.set_result(True)


def _expire(turn: asyncio.Future) -> None:
    if not turn.done():
        turn.set_result(False)
