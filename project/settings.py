"""Settings for the items service, read once from the environment (README.md has the table of every variable).

With no environment at all this is the *embedded default*: SQLite, an in-process cache and Celery tasks run
in-process. Setting DATABASE_URL, REDIS_URL and BROKER_URL moves each piece onto the real stack.
"""

import logging
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from project.env import (
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------
# Mode and security
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# ------------------------------------------------------------------------------
APP_ENV = env_choice("APP_ENV", "development", ("development", "production"))
PRODUCTION = APP_ENV == "production"

# The development key is public on purpose; project/checks.py refuses to start production mode with it.
DEVELOPMENT_SECRET_KEY = "dev-insecure-items-service-key-do-not-use-in-production"  # noqa: S105 (public by design)
SECRET_KEY = env_str("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
DEBUG = env_bool("DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1]")

# Security headers on every response. HSTS and the HTTPS redirect only make sense when TLS terminates in front
# of us (BEHIND_TLS=1); otherwise they would break plain-HTTP clients and probes.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
BEHIND_TLS = env_bool("BEHIND_TLS", default=False)
if BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Probes and the scraper talk plain HTTP on the internal network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# ------------------------------------------------------------------------------
# Applications and middleware: only what the API uses (no admin, sessions, auth or CSRF: there are no
# browser sessions and no cookies, which also keeps responses cacheable by Nginx).
# ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",  # the /docs UI assets ship in drf-spectacular-sidecar
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "django_ratelimit",
    "app",
]

MIDDLEWARE = [
    # project.middleware.inline: Django's and django-prometheus's own classes without the per-request thread
    # hops that MiddlewareMixin costs under ASGI.
    "project.middleware.inline.PrometheusBeforeMiddleware",
    "project.middleware.inline.SecurityMiddleware",
    "project.middleware.inline.XFrameOptionsMiddleware",
    "project.middleware.error_envelope.ErrorEnvelopeMiddleware",
    "project.middleware.allowed_hosts.AllowedHostsMiddleware",
    "project.middleware.body_limit.BodyLimitMiddleware",
    "project.middleware.inline.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
WSGI_APPLICATION = "project.wsgi.application"
# /items and /items/ are both routed explicitly; a redirect would break `hey -m POST .../items`.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# ------------------------------------------------------------------------------
# Database
# https://docs.djangoproject.com/en/5.2/ref/databases/
# ------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
DB_CONNECT_TIMEOUT_S = env_int("DB_CONNECT_TIMEOUT_S", 3, minimum=1)
# How long a request thread keeps its connection to PgBouncer (0 = a new one per request). Safe under ASGI only
# because project/asgi_stack/handler.py keeps request threads: docs/decisions/003-kept-database-connections.md.
DB_CONN_MAX_AGE_S = env_int("DB_CONN_MAX_AGE_S", 60, minimum=0)
if DATABASE_URL:
    _db = database_from_url("DATABASE_URL", DATABASE_URL)
    # Pooling to PostgreSQL is PgBouncer's job (transaction mode), where server-side cursors and session state do
    # not survive. No CONN_HEALTH_CHECKS (a SELECT 1 before every querying request): see decision 003 above.
    _db["CONN_MAX_AGE"] = DB_CONN_MAX_AGE_S
    _db["DISABLE_SERVER_SIDE_CURSORS"] = True
    _db["OPTIONS"] = {"connect_timeout": DB_CONNECT_TIMEOUT_S, "application_name": "items"}
else:
    _db = {
        "ENGINE": "django_prometheus.db.backends.sqlite3",
        "NAME": env_str("SQLITE_PATH") or str(BASE_DIR / "db.sqlite3"),
        "OPTIONS": {
            # Concurrent writers queue on SQLite's lock instead of failing at once; IMMEDIATE takes the write
            # lock up front so two writers never deadlock upgrading a read lock.
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
DATABASES = {"default": _db}

# The streaming replica, for API reads (project/replica.py, docs/decisions/010-read-replica.md): empty, every read
# on the primary. Its own PgBouncer entry (items_ro) and the same connection settings as the primary's.
REPLICA_DATABASE_URL = env_str("REPLICA_DATABASE_URL")
# Past this lag reads go to the primary until the replica catches up. It bounds how stale an uncached read may be;
# cached pages are never staler than the version they are cached under (the commit LSN check in app/cache.py).
REPLICA_MAX_LAG_S = env_float("REPLICA_MAX_LAG_S", 5.0, minimum=0.0)
if REPLICA_DATABASE_URL:
    if not DATABASE_URL:
        raise ImproperlyConfigured(
            "REPLICA_DATABASE_URL is set but DATABASE_URL is not: a replica needs its PostgreSQL primary."
        )
    DATABASES["replica"] = {
        **database_from_url("REPLICA_DATABASE_URL", REPLICA_DATABASE_URL),
        **{key: _db[key] for key in ("CONN_MAX_AGE", "DISABLE_SERVER_SIDE_CURSORS", "OPTIONS")},
        # Django's test runner must not create a second test database: the replica is the primary's copy.
        "TEST": {"MIRROR": "default"},
    }
# Writes and migrations on the primary, reads on the replica while it is healthy (a router of our own: decision 010
# says why not a library). Without a replica it sends everything to the primary.
DATABASE_ROUTERS = ["project.replica.PrimaryReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# Cache (idempotency keys, rate-limit counters, response cache)
# https://github.com/jazzband/django-redis
# ------------------------------------------------------------------------------
# Two stores, because one evicts and the other must not:
# - REDIS_URL ("default"): the response cache (app/cache.py), sized by maxmemory and evicting (volatile-lru);
#   anonymous GETs decide what fills it.
# - STATE_REDIS_URL ("state"): Idempotency-Key records and rate-limit counters, on a Redis with
#   `maxmemory-policy noeviction`, so that no read traffic can make a retry store a second item. Empty: the
#   same Redis as REDIS_URL (development only; production warns, items.W002).
# Without either, each is a per-process memory cache (the embedded default).
REDIS_URL = env_str("REDIS_URL")
# gunicorn's worker count (deploy/web/gunicorn.conf.py reads the same variable): per-process state is only
# safe with one.
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", os.cpu_count() or 1, minimum=1)
STATE_REDIS_URL = env_str("STATE_REDIS_URL") or REDIS_URL


def _redis_cache(url: str) -> dict:
    return {
        "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # Short timeouts: a dead Redis must cost a request milliseconds, not the client's patience.
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
        },
    }


def _memory_cache(name: str, **options: int) -> dict:
    return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": name, "OPTIONS": options}


CACHES = {
    "default": _redis_cache(REDIS_URL) if REDIS_URL else _memory_cache("items"),
    # In memory, no culling: Django's default (300 entries, then a third dropped) would forget a key within
    # minutes; records live their whole IDEMPOTENCY_TTL_S instead (a development server holds few).
    "state": _redis_cache(STATE_REDIS_URL) if STATE_REDIS_URL else _memory_cache("state", MAX_ENTRIES=10**9),
}

# ------------------------------------------------------------------------------
# Celery: POST writes are messages; the worker stores them
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
BROKER_URL = env_str("BROKER_URL")
CELERY_BROKER_URL = BROKER_URL or "memory://"
# Without a broker the embedded default runs the very same task in-process, so GET sees the row at once.
CELERY_TASK_ALWAYS_EAGER = not BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# These three govern Celery's own task consumer only: the items queue is consumed, and acked after the commit, by
# the batching consumer step (docs/decisions/006-batching-consumer.md).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A 202 goes out only once RabbitMQ has confirmed the message: docs/decisions/007-confirmed-publish-and-backpressure.md.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Fail fast when the broker is unreachable: the POST answers 503 within about this long.
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("BROKER_CONNECT_TIMEOUT_S", 2.0, minimum=0.1)
PUBLISH_CONFIRM_TIMEOUT_S = env_float("PUBLISH_CONFIRM_TIMEOUT_S", 2.0, minimum=0.1)
# POST /items accepted on the event loop with pipelined confirms (app/write_path.py); 0 sends every POST through
# Django and a confirm round trip per request, as before (kept for A/B benchmarks: docs/load-testing.md).
WRITE_PATH_ENABLED = env_bool("WRITE_PATH_ENABLED", default=True)
# Confirms one web process may wait for at once; past it a POST is answered 503 overloaded. Far above what a
# healthy broker leaves outstanding (a few milliseconds' worth), it bounds the memory a stalled broker can pin.
PUBLISH_MAX_IN_FLIGHT = env_int("PUBLISH_MAX_IN_FLIGHT", 1000, minimum=1)
# Items one message of the write path may carry: the POSTs that reach publish in one turn of a worker's event loop
# share a message and its confirm (1: a message per POST). The queue's x-max-length counts messages, so it holds
# at most ITEMS_QUEUE_MAX_LENGTH x this many items, and so do the backpressure watermarks. 32: at 100
# connections 99.6% of the messages held fewer (docs/decisions/011-write-path-on-the-event-loop.md).
PUBLISH_BATCH_MAX = env_int("PUBLISH_BATCH_MAX", 32, minimum=1)
# Hard cap of the items queue (x-max-length with reject-publish): past it the broker refuses new messages (007).
ITEMS_QUEUE_MAX_LENGTH = env_int("ITEMS_QUEUE_MAX_LENGTH", 100_000, minimum=1)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The worker consumes the items queue through the consumer step registered in project/celery.py, not as one
# task per message; its pool only serves the default queue. The one place its size is set: deploy/worker/start
# passes no --concurrency, so the native stack, the images and compose all run this value.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 2, minimum=1)
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)  # 0: not served
WORKER_METRICS_ADDR = env_str("WORKER_METRICS_ADDR", "127.0.0.1")

# ------------------------------------------------------------------------------
# API behaviour
# ------------------------------------------------------------------------------
ITEMS_MAX_BODY_BYTES = 16 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = ITEMS_MAX_BODY_BYTES
CACHE_MAX_AGE_S = env_int("CACHE_MAX_AGE_S", 1, minimum=0)
# How long Nginx's micro-cache may serve a GET /items* answer, told per answer in X-Accel-Expires (app/http.py):
# fresh until the end of the wall-clock second TTL - 1 from now, so an answer is at most this old. 0: not cached.
MICROCACHE_TTL_S = env_int("MICROCACHE_TTL_S", 1, minimum=0)
# The app cache of GET response bytes in Redis (app/cache.py, app/fast_path.py); needs REDIS_URL.
# docs/decisions/008-read-caching.md
RESPONSE_CACHE_ENABLED = env_bool("RESPONSE_CACHE_ENABLED", default=True)
# Lifetime of a page entry; the version check, not this, is what makes new rows visible.
RESPONSE_CACHE_TTL_S = env_int("RESPONSE_CACHE_TTL_S", 300, minimum=1)
IDEMPOTENCY_TTL_S = env_int("IDEMPOTENCY_TTL_S", 24 * 3600, minimum=60)
READYZ_TIMEOUT_S = env_float("READYZ_TIMEOUT_S", 2.0, minimum=0.1)
# How long a process reuses its last readiness answer: probes and floods alike cost the dependencies at most
# one run per process per interval (0: every request runs the checks).
READYZ_CACHE_S = env_float("READYZ_CACHE_S", 1.0, minimum=0.0)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["project.errors.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "project.drf.ContentNegotiation",
    "DEFAULT_PARSER_CLASSES": ["project.drf.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "project.errors.drf_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Items API",
    "DESCRIPTION": "Accepts items asynchronously (202) and serves them newest first with keyset pagination.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # UI assets from the sidecar package, served by us: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "project.schema.drop_optional_slash",
    ],
}

# ------------------------------------------------------------------------------
# Rate limiting (django-ratelimit on POST; Nginx has its own layer in front)
# https://django-ratelimit.readthedocs.io/en/stable/settings.html
# ------------------------------------------------------------------------------
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLED", default=PRODUCTION)
RATELIMIT_POST_RATE = env_str("RATELIMIT_POST_RATE", "5/m")
RATELIMIT_ALLOWLIST = env_list("RATELIMIT_ALLOWLIST")
# Peers whose X-Forwarded-For / X-Real-IP we believe (Nginx); anybody else's headers are ignored.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
RATELIMIT_IP_META_KEY = "project.net.client_ip"
RATELIMIT_VIEW = "project.errors.ratelimited_view"
# Redis down must not turn POSTs into 500s: the counters live behind a backend that fails open (counted in
# items_ratelimit_fail_open_total; Nginx's per-IP limit still stands in front).
RATELIMIT_FAIL_OPEN = True
RATELIMIT_USE_CACHE = "state"
if STATE_REDIS_URL:
    CACHES["ratelimit"] = {**CACHES["state"], "BACKEND": "project.ratelimit_cache.FailOpenRedisCache"}
    RATELIMIT_USE_CACHE = "ratelimit"

# ------------------------------------------------------------------------------
# Overload protection: load shedding and queue-depth backpressure (docs/architecture.md, "Overload protection")
# Why these defaults: docs/decisions/001-load-shedding.md, docs/decisions/007-confirmed-publish-and-backpressure.md
# ------------------------------------------------------------------------------
# Off in the embedded default: a single `make run` process is a development server, to be measured, not shed.
LOAD_SHEDDING_ENABLED = env_bool("LOAD_SHEDDING_ENABLED", default=PRODUCTION)
# The most a request may wait before the app starts on it, in front of the app (X-Request-Start from Nginx) and
# in the shedder's queue together; long enough to keep the peak's own queueing whole.
SHED_MAX_QUEUE_TIME_MS = env_int("SHED_MAX_QUEUE_TIME_MS", 1000, minimum=1)
# A request joins the shedder's queue only if predicted to start within this (else 503 at once): it sets the
# latency of what is admitted under overload.
SHED_QUEUE_TARGET_MS = env_int("SHED_QUEUE_TARGET_MS", 400, minimum=0)
# The adaptive limit of requests *running* in Django at once, per gunicorn worker: floor, ceiling and start. Each
# holds a thread contending for the GIL with the event loop that answers the rejected, so few is fast. The floor is
# also where the limiter measures its latency baseline (project/asgi_stack/limiter.py).
SHED_LIMIT_MIN = env_int("SHED_LIMIT_MIN", 4, minimum=1)
SHED_LIMIT_MAX = env_int("SHED_LIMIT_MAX", 64, minimum=1)
SHED_LIMIT_INITIAL = env_int("SHED_LIMIT_INITIAL", 8, minimum=1)
# Rejections a worker answers at once per second; past that (plus a 0.5 s burst) each 503 is held back for up to
# its Retry-After, so clients that re-send at once cannot spend the CPU the admitted requests need; clients that
# honour Retry-After stay under it. 0 = never held.
SHED_REJECTIONS_PER_S = env_int("SHED_REJECTIONS_PER_S", 250, minimum=0)
# How many times its baseline latency (measured at the floor) a window may take before the limit shrinks. On a
# CPU-bound worker the limit settles near tolerance x floor + its square root; on I/O it grows until latency rises.
SHED_LATENCY_TOLERANCE = env_float("SHED_LATENCY_TOLERANCE", 1.5, minimum=1.0)
# SHED_LIMIT_MIN <= SHED_LIMIT_INITIAL <= SHED_LIMIT_MAX is checked at start (project/checks.py, items.E004).

# POST admission from the items queue's depth (app/messaging/backpressure.py; only with BROKER_URL): nothing below
# LOW, a delay growing to BACKPRESSURE_MAX_DELAY_MS towards HIGH, 503 queue_full from HIGH. HIGH sits below
# ITEMS_QUEUE_MAX_LENGTH so that we answer before the broker's reject-publish (the hard stop) has to.
BACKPRESSURE_LOW = env_int("BACKPRESSURE_LOW", 10_000, minimum=0)
BACKPRESSURE_HIGH = env_int("BACKPRESSURE_HIGH", 50_000, minimum=1)
BACKPRESSURE_MAX_DELAY_MS = env_int("BACKPRESSURE_MAX_DELAY_MS", 100, minimum=0)
# One passive queue_declare per process at most this often; requests in between reuse the last depth.
BACKPRESSURE_SAMPLE_MS = env_int("BACKPRESSURE_SAMPLE_MS", 100, minimum=10)
# BACKPRESSURE_LOW < BACKPRESSURE_HIGH is checked at start (project/checks.py, items.E005).

# ------------------------------------------------------------------------------
# System checks silenced, each for a reason (https://docs.djangoproject.com/en/5.2/ref/checks/)
# ------------------------------------------------------------------------------
SILENCED_SYSTEM_CHECKS = [
    # No cookies or sessions exist, so there is nothing for CSRF to protect; DRF views are csrf_exempt anyway.
    "security.W003",
    # W001/W002 look for Django's exact class paths; MIDDLEWARE has the same classes through
    # project.middleware.inline, which items.W001 (project/checks.py) checks for instead.
    "security.W001",
    "security.W002",
    # Our Redis backend is django-redis's own class with metrics added, which the check does not recognise.
    "django_ratelimit.W001",
]
if not BEHIND_TLS:
    # TLS is not terminated in front of this deployment, so HSTS and the HTTPS redirect would break it;
    # BEHIND_TLS=1 turns both on.
    SILENCED_SYSTEM_CHECKS += ["security.W004", "security.W008"]
if not STATE_REDIS_URL:
    # The embedded default's local-memory cache is per process, which is all a single `make run` needs
    # (production with more than one process refuses it: items.E006).
    SILENCED_SYSTEM_CHECKS.append("django_ratelimit.E003")

# ------------------------------------------------------------------------------
# Logging: one line per event, collected by the process manager; JSON in production (project/logs.py)
# https://docs.djangoproject.com/en/5.2/topics/logging/
# ------------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
# json: one object per line with request_id (what a log pipeline parses); text: the lines a person reads.
LOG_FORMAT = env_choice("LOG_FORMAT", "json" if PRODUCTION else "text", ("json", "text"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "project.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "project.logs.json_formatter"},  # LOG_FORMAT names one of these two
        "text": {"()": "project.logs.TextFormatter"},
        "access": {"format": "%(message)s"},  # the text access line is the whole record
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
        "access": {
            # written from a thread of its own: the event loop only queues the line (project/logs.py)
            "class": "project.logs.BackgroundStreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "access",
            "filters": ["request_id"],
            "stream": "ext://sys.stdout",
        },
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},  # 4xx are answers, not incidents
        # project/asgi_stack/access_log.py: on stdout, as access logs are.
        "items.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}
# Python warnings (a library's deprecation, Django's runtime ones) become log records in the same format, not
# stray lines on stderr.
logging.captureWarnings(True)
# One access line per request from the outermost ASGI wrapper (0 turns it off, e.g. for load tests; Nginx keeps
# its own).
ACCESS_LOG = env_bool("ACCESS_LOG", default=True)

# ------------------------------------------------------------------------------
# Tracing: OpenTelemetry, off unless an OTLP endpoint is named (project/tracing.py)
# https://opentelemetry.io/docs/specs/otel/protocol/exporter/
# ------------------------------------------------------------------------------
# e.g. http://collector:4318: spans go to <endpoint>/v1/traces over OTLP/HTTP. The SDK reads its other OTEL_*
# variables itself (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS, ...).
OTEL_EXPORTER_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_ENDPOINT")

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
