"""Gunicorn settings for the items API: uvicorn workers behind Nginx, metrics aggregated across workers."""

import gc
import logging
import multiprocessing
import os
import shutil
from pathlib import Path

from gunicorn import glogging
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from uvicorn_worker import UvicornWorker

# --- Sockets and workers -------------------------------------------------------------------------------------
# Loopback by default: only Nginx should reach gunicorn (compose sets 0.0.0.0:8000 on the private network).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Async workers: one event loop per core saturates the CPU; the 2*cores+1 rule is for blocking sync workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
# Overload is answered by the app's load shedder (project/asgi_stack/shedding.py: a few requests running per
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
    """uvloop and httptools, with:
    - our envelope on the 400 uvicorn's parser answers itself (project/asgi_stack/server_errors.py);
    - limit_concurrency, which the plain worker has no setting for;
    - no proxy headers: the ASGI scope keeps the real peer (Nginx), whose X-Forwarded-For the app reads itself,
      trusting only TRUSTED_PROXIES (project/net.py). uvicorn's rewrite hid the peer from the load shedder."""

    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": "project.asgi_stack.server_errors:EnvelopeHttpToolsProtocol",
        "limit_concurrency": _limit_concurrency or None,
        "proxy_headers": False,
    }


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
# Seconds in-flight requests get to finish on SIGTERM/reload before workers are killed; the native stack
# (deploy.stack) waits longer.
graceful_timeout = 20
# Idle keepalive seconds: longer than Nginx's upstream keepalive_timeout (60 s), so Nginx closes idle
# connections first and never sends a request on a connection gunicorn is closing (a spurious 502).
keepalive = 75
# Heartbeat files on tmpfs: on a disk-backed /tmp a slow fsync can make the master think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (only heartbeat files)

# --- Logging -------------------------------------------------------------------------------------------------
# The access line is written by the app's ASGI wrappers (project/asgi_stack/access_log.py, ACCESS_LOG);
# gunicorn's access_log_format would be ignored by uvicorn workers anyway.
errorlog = "-"
accesslog = None
proc_name = "items-web"
# gunicorn's and uvicorn's own lines (boots, worker exits, timeouts) as JSON too when the app's are (LOG_FORMAT,
# default json in production as in project/settings.py), with the fields of project/logs.py's json_formatter:
# that module is not imported here, since importing `project` loads the Celery app into the master.
_production = os.environ.get("APP_ENV", "").strip().lower() == "production"
_json_logs = (os.environ.get("LOG_FORMAT", "").strip().lower() or ("json" if _production else "text")) == "json"


class ItemsLogger(glogging.Logger):
    def setup(self, cfg):  # also run again on a reload (HUP)
        super().setup(cfg)
        if _json_logs:
            for handler in self.error_log.handlers:
                handler.setFormatter(
                    JsonFormatter(
                        "%(levelname)s %(name)s %(message)s",
                        timestamp="time",
                        rename_fields={"levelname": "level", "name": "logger"},
                        reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's, with terminal colours
                    )
                )


logger_class = ItemsLogger

# gunicorn's control socket (gunicornc) is off unless GUNICORN_CONTROL_SOCKET names a path: by default every
# master of a user shares one path ($HOME/.gunicorn/gunicorn.ctl), and the last to stop removes it for the rest.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or "gunicorn.ctl"
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")


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
    """Freeze what the app loaded out of the garbage collector's way (docs/decisions/004-gunicorn-worker-lifetime-
    and-gc-freeze.md), and silence uvicorn's access line, which the app's replaces."""
    # The objects of Django, DRF and the app live as long as the worker; without this every full collection walks
    # them all, and a full collection stops the worker, event loop included. Instagram's gc.freeze() practice.
    gc.collect()
    gc.freeze()
    logging.getLogger("uvicorn.access").disabled = True
