"""Liveness (/healthz: touches nothing) and readiness (/readyz: one timed check per configured dependency)."""

import asyncio
import json
import time
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from kombu import Connection

from project.errors import JSON_CONTENT_TYPE

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


def _check_cache() -> None:
    cache.set("readyz:probe", "1", timeout=10)
    if cache.get("readyz:probe") != "1":
        raise RuntimeError("value written was not read back")


def _check_broker() -> None:
    with Connection(settings.BROKER_URL, connect_timeout=settings.READYZ_TIMEOUT_S) as broker:
        broker.connect()


def configured_checks() -> dict[str, Callable[[], None]]:
    checks = {"database": _check_database, "cache": _check_cache}
    if settings.BROKER_URL:  # the embedded default runs tasks in-process: there is no broker to check
        checks["broker"] = _check_broker
    return checks


async def _timed(check: Callable[[], None], timeout_s: float) -> dict:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(sync_to_async(check, thread_sensitive=False)(), timeout_s)
        result: dict = {"ok": True}
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {timeout_s:g} s"}
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


@require_safe
async def readyz(request: HttpRequest) -> HttpResponse:
    checks = configured_checks()
    results = await asyncio.gather(*(_timed(check, settings.READYZ_TIMEOUT_S) for check in checks.values()))
    by_name = dict(zip(checks, results, strict=True))
    down = [name for name, result in by_name.items() if not result["ok"]]
    body = {"status": "unavailable" if down else "ok", "checks": by_name}
    if down:
        body["error"] = "not_ready"
        body["detail"] = f"Not ready: {', '.join(down)} unavailable."
    return _json(body, status=503 if down else 200)
