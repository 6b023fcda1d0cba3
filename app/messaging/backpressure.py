"""POST admission from the items queue's depth: a growing delay between the watermarks, 503 above the high one.

The depth is sampled at most every BACKPRESSURE_SAMPLE_MS per process (a passive queue_declare on one
connection of this process), never once per request: whichever request finds the sample stale refreshes it,
and requests arriving meanwhile use the last value instead of waiting. The queue's x-max-length with
reject-publish (app/messaging/queues.py) stays the hard stop behind this.

The watermarks count messages, as RabbitMQ does. A message of the write path holds the POSTs of one event-loop
turn (app/messaging/async_publish.py), 1 to PUBLISH_BATCH_MAX items; an estimate in items from the batch sizes
this process sees now would misjudge a backlog written earlier, by other processes, at another load.

On the write path (app/write_path.py, on the event loop) the delay is an asyncio.sleep and a stale sample is
refreshed in the background, never waited for. On the Django path (a sync DRF view, in a thread of its own per
request) it is a time.sleep that holds only that request, excluded from the load shedder's latency samples: it
is deliberate, not a sign of overload.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from kombu import Connection

from app import metrics
from app.exceptions import QueueFull
from app.messaging.queues import ITEMS_QUEUE
from project.asgi_stack.latency import exclude_from_latency

logger = logging.getLogger(__name__)

# After a failed sample, how long requests go on without a depth (admitted: the publish itself will answer
# 503 if the broker is really gone) before the next attempt.
FAILED_SAMPLE_BACKOFF_S = 1.0


def admission_delay_s(depth: int | None, *, low: int, high: int, max_delay_s: float) -> float | None:
    """Seconds to hold a POST at this depth: 0 at or below `low`, growing linearly to `max_delay_s` towards
    `high`; None (reject) at or above `high`. An unknown depth admits."""
    if depth is None or depth <= low:
        return 0.0
    if depth >= high:
        return None
    return max_delay_s * (depth - low) / (high - low)


class DepthSampler:
    """The latest queue depth, refreshed by at most one read at a time and at most every interval_s.

    The read runs in a thread of its own, and the request that found the sample stale waits for it at most
    max_wait_s: a broker that accepts the connection but never answers (a hung node, a suspended queue leader)
    must not hold that POST for the whole AMQP timeout. Until the read returns, requests use the last depth."""

    def __init__(
        self,
        read_depth: Callable[[], int],
        *,
        interval_s: float,
        max_wait_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_depth, self.interval_s, self.max_wait_s, self.clock = read_depth, interval_s, max_wait_s, clock
        self.depth: int | None = None
        self._next_at = 0.0
        self._refreshing = threading.Lock()

    def current(self, *, wait: bool = True) -> int | None:
        """The depth; a stale sample starts a refresh, waited for up to max_wait_s (`wait`) or not at all."""
        if self.clock() >= self._next_at and self._refreshing.acquire(blocking=False):
            self._next_at = self.clock() + self.interval_s
            done = threading.Event()
            threading.Thread(target=self._refresh, args=(done,), name="queue-depth-sample", daemon=True).start()
            if wait:
                done.wait(self.max_wait_s)
        return self.depth

    def _refresh(self, done: threading.Event) -> None:
        try:
            self.depth = self.read_depth()
            metrics.queue_depth.set(self.depth)
        except Exception as exc:  # any failure to read: unknown depth, retry after a back-off
            logger.warning("queue depth sample failed: %r", exc)
            self.depth = None
            self._next_at = self.clock() + FAILED_SAMPLE_BACKOFF_S
        finally:
            self._refreshing.release()
            done.set()


class BrokerDepth:
    """Messages ready in the items queue, by passive queue_declare on one connection kept per process."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.connection: Connection | None = None

    def __call__(self) -> int:
        try:
            if self.connection is None:
                self.connection = Connection(self.url, connect_timeout=self.timeout_s)
            channel: Any = self.connection.default_channel  # kombu's stubs lack most of a channel's methods
            _, ready, _ = channel.queue_declare(queue=ITEMS_QUEUE, passive=True)
            return ready
        except Exception:
            # A passive declare of a queue that does not exist yet closes the channel; a dead broker the
            # connection. Start afresh next time either way.
            if self.connection is not None:
                self.connection.release()
            self.connection = None
            raise


class Backpressure:
    def __init__(
        self,
        sampler: DepthSampler,
        *,
        low: int,
        high: int,
        max_delay_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sampler, self.low, self.high, self.max_delay_s, self.sleep = sampler, low, high, max_delay_s, sleep

    def admit(self) -> None:
        """Return once the POST may publish (after its delay, if any); raise QueueFull when over high."""
        delay_s = self.delay_s(wait=True)
        if delay_s > 0:
            exclude_from_latency(delay_s)
            self.sleep(delay_s)

    def delay_s(self, *, wait: bool) -> float:
        """How long this POST is to be held; QueueFull when over high."""
        depth = self.sampler.current(wait=wait)
        delay_s = admission_delay_s(depth, low=self.low, high=self.high, max_delay_s=self.max_delay_s)
        if delay_s is None:
            metrics.backpressure_rejected.inc()
            raise QueueFull()
        if delay_s > 0:
            metrics.backpressure_delayed.inc()
        return delay_s


_instance: Backpressure | None = None
_instance_lock = threading.Lock()


def backpressure_admit() -> None:
    """Admission for one POST in this process; nothing without a broker (the embedded default has no queue)."""
    if settings.BROKER_URL:
        _backpressure().admit()


async def abackpressure_admit() -> None:
    """As backpressure_admit, on the event loop."""
    if settings.BROKER_URL and (delay_s := _backpressure().delay_s(wait=False)) > 0:
        await asyncio.sleep(delay_s)


def _backpressure() -> Backpressure:
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Backpressure(
                    DepthSampler(
                        BrokerDepth(settings.BROKER_URL, settings.CELERY_BROKER_CONNECTION_TIMEOUT),
                        interval_s=settings.BACKPRESSURE_SAMPLE_MS / 1000,
                    ),
                    low=settings.BACKPRESSURE_LOW,
                    high=settings.BACKPRESSURE_HIGH,
                    max_delay_s=settings.BACKPRESSURE_MAX_DELAY_MS / 1000,
                )
    return _instance
