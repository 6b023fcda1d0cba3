"""Time a request spends waiting, not computing, left out of the load shedder's latency sample.

The backpressure delay on the Django path's POST (app/messaging/backpressure.py) is deliberate, and a database
query is a wait on another server: counted as service time, either would read as overload and shrink the
running limit, which is there to keep the threads contending for this process's GIL and CPU few, exactly when
the queue or the database, not the CPU, is the bottleneck (a stalled database still fills the slots, and the
shedder's queue delay and budget answer for that).
"""

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token

from django.db import connections

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


def _timed_query(execute, sql, params, many, context):
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        exclude_from_latency(time.perf_counter() - started)


@contextlib.contextmanager
def excluding_queries() -> Iterator[None]:
    """Within it, the time of every query on this thread's database connections is excluded."""
    if excluded_s.get() is None:  # not measured (shedding off, or a probe): nothing to time
        yield
        return
    with contextlib.ExitStack() as stack:
        for connection in connections.all(initialized_only=False):
            stack.enter_context(connection.execute_wrapper(_timed_query))
        yield
