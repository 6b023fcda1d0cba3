"""Prometheus metrics of the web tier's own machinery: load shedding and the rate-limit counter store.

The items domain's metrics (write path, response cache, worker) are in app/metrics.py. Under gunicorn they are
aggregated over workers through PROMETHEUS_MULTIPROC_DIR.
"""

from prometheus_client import Counter, Gauge

# --- Load shedding (project/asgi_stack/shedding.py) ------------------------------------------------------------
# Gauges are summed over live workers: host-wide running requests, queued requests and running limit.
shed_inflight = Gauge(
    "items_shed_inflight",
    "Requests running past the load shedder (summed over workers).",
    multiprocess_mode="livesum",
)
shed_queued = Gauge(
    "items_shed_queued",
    "Requests waiting in the load shedder's queue for a slot (summed over workers).",
    multiprocess_mode="livesum",
)
shed_limit = Gauge(
    "items_shed_limit",
    "Current adaptive limit of running requests (summed over workers).",
    multiprocess_mode="livesum",
)
shed_total = Counter("items_shed_total", "Requests answered 503 overloaded by the load shedder, by reason.", ["reason"])
shed_paced_total = Counter(
    "items_shed_paced_total",
    "Shed requests whose 503 was held back: their connection re-sent within Retry-After of its last 503, or "
    "rejections ran over SHED_REJECTIONS_PER_S.",
)

# --- Rate limiting (project/ratelimit_cache.py) ----------------------------------------------------------------
ratelimit_fail_open_total = Counter(
    "items_ratelimit_fail_open_total", "Rate-limit checks let through because the counter store was unreachable."
)
