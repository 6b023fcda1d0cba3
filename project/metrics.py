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

# --- Reads on the replica (project/replica.py) -------------------------------------------------------------------
db_reads_total = Counter(
    "items_db_reads_total",
    "API reads (pages, items) by the database that answered them: primary or replica.",
    ["database"],
)
replica_fallback_total = Counter(
    "items_replica_fallback_total",
    "Reads sent to the primary although a replica is configured, by reason: unavailable, lagging (past "
    "REPLICA_MAX_LAG_S), behind (the cached version's commit not replayed in time), error (failed on the replica, "
    "retried on the primary).",
    ["reason"],
)
# Per process, from its last health sample; the worst of the live workers. (No "up" gauge: an unlabelled one
# would read 0 in every deployment without a replica; items_replica_fallback_total{reason="unavailable"} says it.)
replica_lag_seconds = Gauge(
    "items_replica_lag_seconds",
    "How far the replica's replay is behind the primary, in seconds (LSN-based: 0 once it has replayed all the "
    "primary had written at the last sample).",
    multiprocess_mode="livemax",
)
