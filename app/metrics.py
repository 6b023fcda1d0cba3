"""Prometheus metrics of the items domain: the write path, the response cache and the worker. Label values use
the error codes of app/exceptions.py. The web tier's own (shedding, rate limiting) are in project/metrics.py."""

from prometheus_client import Counter, Gauge, Histogram

# API side (gunicorn workers; aggregated through PROMETHEUS_MULTIPROC_DIR)
published = Counter("items_published_total", "Items published to the broker and confirmed by it.")
publish_failed = Counter("items_publish_failed_total", "Publishes that did not get a confirm, by reason.", ["reason"])
publish_unconfirmed = Counter(
    "items_publish_unconfirmed_total",
    "Failed publishes that may still have reached the queue (no confirm in time, connection lost after sending): "
    "answered 503 with the Idempotency-Key kept bound to the item, so a retry republishes the same id.",
)
publish_seconds = Histogram(
    "items_publish_seconds",
    "Time from publish to the broker's confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

publish_batch_items = Histogram(
    "items_publish_batch_items",
    "Items per message the write path published: the POSTs of one event-loop turn share a message and a confirm.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

posts_to_django = Counter(
    "items_posts_to_django_total",
    "POST /items the write path handed to Django (which answers or refuses them, a thread each), by reason: "
    "content_type, accept, host, body (a body the serializer refuses: Django answers its 400), idempotency_key.",
    ["reason"],
)

# POST admission from the sampled depth (app/messaging/backpressure.py); the depth itself is items_queue_depth below.
backpressure_delayed = Counter(
    "items_backpressure_delayed_total", "POSTs held for a while because the items queue was between the watermarks."
)
backpressure_rejected = Counter(
    "items_backpressure_rejected_total", "POSTs answered 503 queue_full because the items queue was over the high one."
)

# Response cache (app/cache.py), in the web workers
response_cache_results = Counter(
    "items_response_cache_total",
    "App-cache lookups of GET responses, by result: hit, stale (served while another rebuilds), miss (rebuilt), "
    "waited (served another's rebuild), error (Redis failed: served from the database), off (breaker open).",
    ["result"],
)

# Worker side (served by the worker on WORKER_METRICS_PORT)
stored_rows = Counter("items_stored_total", "Items handled by committed batches (new or already stored).")
batch_size = Histogram("items_batch_size", "Items per committed insert.", buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500))
store_retries = Counter("items_store_retries_total", "Batch inserts retried after a transient database error.")
cache_version_bump_failures = Counter(
    "items_cache_version_bump_failures_total",
    "Failed INCRs of items:version after a commit (each try): while none succeeds, cached pages may be stale.",
)
cache_version_bump_owed = Gauge(
    "items_cache_version_bump_owed",
    "1 while the worker owes a version bump (Redis refused it): cached pages may be stale until it is paid.",
    multiprocess_mode="max",
)
dead_lettered = Counter("items_dead_lettered_total", "Messages moved to the dead-letter queue, by reason.", ["reason"])
queue_depth = Gauge(
    "items_queue_depth",
    "Messages ready in the items queue, as last sampled by the API's backpressure (max over workers).",
    multiprocess_mode="max",
)
