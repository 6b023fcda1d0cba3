"""Time a request spends waiting on purpose, left out of the load shedder's latency sample.

The backpressure delay on POST (app/messaging/backpressure.py) is deliberate: counted as service time, it would
read as overload and shrink the running limit exactly when the queue, not the CPU, is the bottleneck.
"""

from contextvars import ContextVar, Token

# Time other code asked to leave out of the latency sample (e.g. the deliberate backpressure delay on POST):
# a mutable holder set per request, so a thread that runs the view (sync_to_async copies the context) adds
# to the very same list.
excluded_s: ContextVar[list[float] | None] = ContextVar("excluded_from_latency_s", default=None)


def exclude_from_latency(seconds: float) -> None:
    """Tell the limiter that `seconds` of this request were spent waiting on purpose, not on overload."""
    holder = excluded_s.get()
    if holder is not None:
        holder.append(seconds)


def start_measuring() -> tuple[list[float], Token[list[float] | None]]:
    """A fresh holder for this request (and the token to reset it with)."""
    excluded: list[float] = []
    return excluded, excluded_s.set(excluded)
