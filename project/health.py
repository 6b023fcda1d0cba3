"""Liveness (/healthz: touches nothing) and readiness (/readyz: one timed check per configured dependency).

The streaming replica, when configured, is reported (up, lag, where reads go) but never makes /readyz a 503:
without it reads go to the primary, and the service is as ready as it was before it had one.

/readyz is cheap on purpose, since anyone can ask: one run of the checks per process at a time, its answer kept
for READYZ_CACHE_S, and the broker checked over a connection kept between runs. Its body names what is down and
how long each check took, never why: error messages carry internal addresses, so they go to the log.
"""

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from kombu import Connection

from project import replica
from project.errors import JSON_CONTENT_TYPE

logger = logging.getLogger(__name__)

_HEALTHY_BODY = b'{"status":"ok"}'


def _json(body: dict, status: int = 200) -> HttpResponse:
    response = HttpResponse(json.dumps(body).encode(), status=status, content_type=JSON_CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
async def healthz(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(_HEALTHY_BODY, content_type=JSON_CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


def _check_database() -> None:
    # Runs in a worker thread of its own: close what it opened, or the connection would outlive the check.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def _check_replica() -> dict:
    """A health sample taken now (it also refreshes this process's routing), and what it means for reads."""
    sample = replica.health.take_sample()
    lag_s = None if sample.lag_s is None else round(sample.lag_s, 3)
    serving = sample.up and lag_s is not None and lag_s <= settings.REPLICA_MAX_LAG_S
    if not sample.up:
        raise RuntimeError("replica unavailable")
    return {"lag_s": lag_s, "max_lag_s": settings.REPLICA_MAX_LAG_S, "reads": "replica" if serving else "primary"}


def _write_and_read(alias: str) -> None:
    store = caches[alias]
    store.set("readyz:probe", "1", timeout=10)
    if store.get("readyz:probe") != "1":
        raise RuntimeError("value written was not read back")


class _KeptBroker:
    """One AMQP connection per process for the probe: a channel opened and closed on it is the round trip, where
    a new connection per probe would cost a TCP handshake and a login on the broker each time."""

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            kept = self.connection is not None
            try:
                self._round_trip()
            except Exception:
                if not kept:
                    raise
                # The kept connection may be one the broker dropped since (it restarted): that is not the broker
                # being down, so one more try, on a new connection, decides.
                self._round_trip()

    def _round_trip(self) -> None:
        try:
            if self.connection is None:
                self.connection = Connection(settings.BROKER_URL, connect_timeout=settings.READYZ_TIMEOUT_S)
            self.connection.ensure_connection(max_retries=1)
            channel: Any = self.connection.channel()  # kombu's stubs lack most of a channel's methods
            channel.close()
        except Exception:
            if self.connection is not None:
                self.connection.release()
            self.connection = None
            raise


_check_broker = _KeptBroker()


# Reported, but not a reason to answer 503 (see the module's docstring).
OPTIONAL_CHECKS = frozenset({"replica"})


def configured_checks() -> dict[str, Callable[[], dict | None]]:
    checks: dict[str, Callable[[], dict | None]] = {
        "database": _check_database,
        "cache": lambda: _write_and_read("default"),
    }
    if replica.configured():
        checks["replica"] = _check_replica
    if settings.STATE_REDIS_URL != settings.REDIS_URL or not settings.REDIS_URL:
        checks["state"] = lambda: _write_and_read("state")
    if settings.BROKER_URL:  # the embedded default runs tasks in-process: there is no broker to check
        checks["broker"] = _check_broker
    return checks


async def _timed(name: str, check: Callable[[], dict | None], timeout_s: float) -> dict:
    started = time.perf_counter()
    try:
        details = await asyncio.wait_for(sync_to_async(check, thread_sensitive=False)(), timeout_s)
        result: dict = {"ok": True, **(details or {})}
    except TimeoutError:
        logger.warning("readiness: %s gave no answer within %g s", name, timeout_s)
        result = {"ok": False, "error": f"no answer within {timeout_s:g} s"}
    except Exception as exc:
        logger.warning("readiness: %s failed: %r", name, exc)
        result = {"ok": False, "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


class _Readiness:
    """The last answer of this process, and the one run in progress that concurrent probes wait for."""

    def __init__(self) -> None:
        self.answer: tuple[float, int, dict] | None = None  # (when, status, body)
        self.running: asyncio.Task | None = None

    async def current(self) -> tuple[int, dict]:
        if self.answer is not None and time.monotonic() - self.answer[0] < settings.READYZ_CACHE_S:
            return self.answer[1], self.answer[2]
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(self._run())
        return await asyncio.shield(self.running)

    async def _run(self) -> tuple[int, dict]:
        checks = configured_checks()
        timeout_s = settings.READYZ_TIMEOUT_S
        results = await asyncio.gather(*(_timed(name, check, timeout_s) for name, check in checks.items()))
        by_name = dict(zip(checks, results, strict=True))
        if "replica" in by_name and not by_name["replica"]["ok"]:
            by_name["replica"]["reads"] = "primary"
        down = [name for name, result in by_name.items() if not result["ok"] and name not in OPTIONAL_CHECKS]
        body = {"status": "unavailable" if down else "ok", "checks": by_name}
        if down:
            body["error"] = "not_ready"
            body["detail"] = f"Not ready: {', '.join(down)} unavailable."
        status = 503 if down else 200
        self.answer = (time.monotonic(), status, body)
        return status, body


_readiness = _Readiness()


@require_safe
async def readyz(request: HttpRequest) -> HttpResponse:
    status, body = await _readiness.current()
    return _json(body, status=status)
