"""Load shedding, per process: 503 `overloaded` when a request would wait too long for its turn, or already
has waited too long in front of the app.

Two stages:
- a limit on the requests *running* in Django at once (project/asgi_stack/limiter.py). Under ASGI each running
  request holds a thread of its own, and all of them contend for one GIL with the event loop, so a handful
  running per worker keeps the CPU as busy and answers both the admitted and the rejected faster;
- a FIFO of requests waiting for a slot, on the event loop (a future each: no thread, no Django). A request
  joins it only if its predicted wait (queue position x mean service time / limit, plus the time it already
  spent between Nginx and us, from `X-Request-Start`) fits in SHED_QUEUE_TARGET_MS; otherwise it is answered
  at once. One that waits past SHED_MAX_QUEUE_TIME_MS anyway is answered then.

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

from django.conf import settings

from project import metrics
from project.asgi_stack import PROBE_PATHS, latency
from project.asgi_stack.limiter import GradientLimiter, queue_time_s
from project.asgi_stack.pacing import RejectionPacer, RetryTarpit, client_connection
from project.errors import Overloaded, envelope_response

# The ASGI scope key a shed request carries (project/asgi_stack/access_log.py leaves it out of the log).
SHED_SCOPE_KEY = "items.shed_reason"


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

    def predicted_wait_s(self, position: int) -> float:
        """How long the request `position` places back in the queue should wait for a slot."""
        service_s = self.limiter.service_s
        if service_s is None:
            return 0.0  # nothing measured yet: the queue's own timeout still bounds the wait
        return position * service_s / max(int(self.limiter.limit), 1)

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
        # Futures of the requests waiting for a slot, oldest first; each resolves True (slot taken for it) or
        # False (its wait ran out). A future whose wait ran out stays until it reaches the head, so the live
        # waiters are counted apart. Only the event loop's thread touches either.
        self.waiting: deque[asyncio.Future] = deque()
        self.queued = 0
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
            turn = self.waiting[0]
            if turn.done():  # its wait ran out, or it was cancelled
                self.waiting.popleft()
                continue
            if not self.shedder.try_start():
                return
            self.waiting.popleft()
            turn.set_result(True)


def _expire(turn: asyncio.Future) -> None:
    if not turn.done():
        turn.set_result(False)
