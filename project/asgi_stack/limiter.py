"""The adaptive limit on requests running at once in one process, and the wait measured in front of it.

In the spirit of Netflix concurrency-limits' gradient limiter and Envoy's adaptive concurrency: the limit follows
the service time. Why a handful per worker and these tunables: docs/decisions/001-load-shedding.md.
"""

import math
import threading
import time
from collections.abc import Callable

# Tunables of the limiter (trade-offs in GradientLimiter's docstring).
SAMPLE_WINDOW_S = 0.1  # how often the limit is recomputed: shorter reacts faster, longer is less noisy
SAMPLE_MIN_COUNT = 10  # completions a window needs before it counts: a few fast requests must not move the limit
SMOOTHING = 0.2  # share of the newly computed limit taken per window (EWMA): one odd window cannot halve it
MIN_GRADIENT = 0.5  # the limit shrinks by at most half per window, however bad the window looked
BASELINE_REFRESH_S = 30.0  # the min-RTT baseline is re-measured this often, with the limit held at the floor


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
    whatever windows come along is learned under load when a worker starts into traffic, and lets the limit
    grow to where the event loop waits for the GIL among dozens of threads.
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
