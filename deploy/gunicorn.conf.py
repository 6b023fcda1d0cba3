"""Gunicorn settings for the items API: uvicorn workers behind Nginx, metrics aggregated across workers."""

import gc
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

from uvicorn_worker import UvicornWorker

# --- Sockets and workers -------------------------------------------------------------------------------------
# Loopback by default: only Nginx should reach gunicorn (compose sets 0.0.0.0:8000 on the private network).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Async workers: one event loop per core saturates the CPU; the 2*cores+1 rule is for blocking sync workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
# Overload is answered by the app's load shedder (project/middleware/load_shedding.py: a few requests running per
# worker, a time-bounded queue on the event loop, 503 `overloaded` with the envelope and Retry-After for the
# rest), not by the layers below it:
# - backlog: connections the kernel queues while every worker is busy (capped by net.core.somaxconn, 4096 on
#   Debian 12). Generous on purpose: a full backlog means refused connections, which Nginx turns into 502s and
#   a direct client into resets. Time spent waiting there is not lost on us: Nginx stamps X-Request-Start
#   before connecting, and the shedder answers 503 to a request that waited longer than
#   SHED_MAX_QUEUE_TIME_MS.
# - uvicorn's limit_concurrency (connections + tasks per worker) answers a plain-text 503 without envelope or
#   Retry-After, and counts Nginx's idle keepalive connections too: set low, it would shed healthy traffic in
#   place of our shedder. It is kept only as a memory guard, far above what the shedder holds per worker (at
#   most SHED_LIMIT_MAX = 64 running, a queue bounded by SHED_QUEUE_TARGET_MS, ~70-140 at 400 ms on 2 cores, and
#   503s held back by SHED_REJECTIONS_PER_S) plus Nginx's keepalive pool (64 per Nginx worker), so in practice
#   it never fires before the shedder does (UVICORN_LIMIT_CONCURRENCY; 0 = unlimited).
backlog = 2048
_limit_concurrency = int(os.environ.get("UVICORN_LIMIT_CONCURRENCY") or 2000)


class ItemsUvicornWorker(UvicornWorker):
    """uvloop + httptools ("auto"), plus limit_concurrency, which the plain worker has no setting for."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "limit_concurrency": _limit_concurrency or None}


# The class moved out of uvicorn (uvicorn.workers is deprecated).
worker_class = ItemsUvicornWorker

# --- Lifetimes and timeouts ----------------------------------------------------------------------------------
# Recycle a worker after ~1M requests to bound slow leaks; the jitter keeps workers from restarting together.
# uvicorn counts every request, the shedder's 503s too: under overload a worker rejects thousands per second,
# and at 10k (and still at 100k) it was recycled within seconds of an overload, exactly when a worker boot (a
# core-second of imports) and the reset of its kept-alive connections (Nginx 502s) hurt most. `make loadtest`
# measures the workers' RSS through 30 s of 5x overload: flat, so recycling less often lets nothing grow.
max_requests = 1_000_000
max_requests_jitter = 100_000
# Seconds a worker may miss its heartbeat before the master kills it (a blocked event loop).
timeout = 30
# Seconds in-flight requests get to finish on SIGTERM/reload before workers are killed; stack.py waits longer.
graceful_timeout = 20
# Idle keepalive seconds: longer than Nginx's upstream keepalive_timeout (60 s), so Nginx closes idle
# connections first and never sends a request on a connection gunicorn is closing (a spurious 502).
keepalive = 75
# Heartbeat files on tmpfs: on a disk-backed /tmp a slow fsync can make the master think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (only heartbeat files)

# --- Logging -------------------------------------------------------------------------------------------------
errorlog = "-"
# GUNICORN_ACCESS_LOG="" turns the access log off (e.g. for load tests); Nginx keeps its own.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
proc_name = "items-web"


def on_starting(server):
    """Start every run with an empty metrics dir: files of a previous run would be summed in forever."""
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker):
    """A dead worker's live gauges must leave /metrics; its counters stay summed in."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Freeze what the app loaded out of the garbage collector's way, and replace uvicorn's access line (no
    timing, no forwarded-for) with ours; gunicorn's access_log_format is ignored by uvicorn workers."""
    # The ~90k objects of Django, DRF and the app live as long as the worker; without this every full collection
    # walks them all, and a full collection stops the worker, event loop included: 64-106 ms every second or two
    # at ~300 requests/s, 7-26 ms once frozen (measured on one worker). Instagram's gc.freeze() practice.
    gc.collect()
    gc.freeze()
    if worker.log.access_log.handlers:
        logging.getLogger("uvicorn.access").disabled = True
        worker.wsgi = _access_logged(worker.wsgi, worker.log.access_log)


def _access_logged(app, logger):
    """ASGI wrapper: one line per HTTP request with X-Forwarded-For, status, bytes, duration and request id."""

    async def logged(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = time.perf_counter()
        response = {"status": 0, "bytes": 0}

        async def send_and_count(message):
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body":
                response["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, send_and_count)
        finally:
            # Shed requests get no line: one each would be written exactly when the worker can least afford it
            # (~9% of a worker's CPU at 1,000 rejections/s). They are counted in items_shed_total{reason} and
            # logged by Nginx. The key is load_shedding.SHED_SCOPE_KEY, not imported: the master loads no Django.
            if not scope.get("items.shed_reason"):
                _log_access(logger, scope, response, started)

    return logged


def _log_access(logger, scope, response, started):
    headers = dict(scope["headers"])
    client = scope.get("client") or ("-", 0)
    path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
    logger.info(
        '%s xff=%s "%s %s HTTP/%s" %s %s %.1fms rid=%s',
        client[0],
        headers.get(b"x-forwarded-for", b"-").decode("latin-1"),
        scope["method"],
        path,
        scope["http_version"],
        response["status"],
        response["bytes"],
        (time.perf_counter() - started) * 1000,
        headers.get(b"x-request-id", b"-").decode("latin-1"),
    )
