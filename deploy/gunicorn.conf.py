"""Gunicorn settings for the items API: uvicorn workers behind Nginx, metrics aggregated across workers."""

import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

# --- Sockets and workers -------------------------------------------------------------------------------------
# Loopback by default: only Nginx should reach gunicorn (compose sets 0.0.0.0:8000 on the private network).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Async workers: one event loop per core saturates the CPU; the 2*cores+1 rule is for blocking sync workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
# uvloop + httptools ("auto"); the class moved out of uvicorn (uvicorn.workers is deprecated).
worker_class = "uvicorn_worker.UvicornWorker"
backlog = 2048  # connections queued in the kernel while every worker is busy; Nginx retries none of them

# --- Lifetimes and timeouts ----------------------------------------------------------------------------------
# Recycle a worker after ~10k requests to bound slow leaks; the jitter keeps workers from restarting together.
max_requests = 10_000
max_requests_jitter = 1_000
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
    """Replace uvicorn's access line (no timing, no forwarded-for) with ours; gunicorn's access_log_format is
    ignored by uvicorn workers."""
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

    return logged
