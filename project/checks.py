"""Refusals as system checks: `manage.py check` (and `--deploy`) reports them, and start-up
(project/startup.py) refuses to serve while any of them fails. E001-E003 apply in production mode only."""

from django.conf import settings
from django.core import checks


@checks.register("items", deploy=True)
def production_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.PRODUCTION:
        return []
    errors: list[checks.CheckMessage] = []
    key = settings.SECRET_KEY
    # The same strength rule as Django's security.W009, but refusing rather than warning.
    if key == settings.DEVELOPMENT_SECRET_KEY or len(key) < 50 or len(set(key)) < 5:
        errors.append(
            checks.Error(
                "APP_ENV=production with the development SECRET_KEY, or one under 50 characters or 5 distinct ones.",
                hint='Set SECRET_KEY to a random value: python3 -c "import secrets; print(secrets.token_urlsafe(50))"',
                id="items.E001",
            )
        )
    if settings.DEBUG:
        errors.append(
            checks.Error(
                "APP_ENV=production with DEBUG on: tracebacks and settings would leak to clients.",
                hint="Unset DEBUG or set DEBUG=0.",
                id="items.E002",
            )
        )
    if not settings.ALLOWED_HOSTS or "*" in settings.ALLOWED_HOSTS:
        errors.append(
            checks.Error(
                "APP_ENV=production with an empty ALLOWED_HOSTS (every request refused) or with '*' (any Host "
                "header believed, in links and in the fast path alike).",
                hint="Set ALLOWED_HOSTS to the host names clients use, comma-separated (e.g. api.example.com).",
                id="items.E003",
            )
        )
    if not settings.STATE_REDIS_URL and settings.WEB_CONCURRENCY > 1:
        errors.append(
            checks.Error(
                f"APP_ENV=production with {settings.WEB_CONCURRENCY} web processes and no shared store: each "
                "would keep its own Idempotency-Keys and rate-limit counters, so a retry that reaches another "
                "process stores a second item.",
                hint="Set STATE_REDIS_URL (or REDIS_URL) to a Redis all processes share, or WEB_CONCURRENCY=1.",
                id="items.E006",
            )
        )
    if settings.STATE_REDIS_URL and settings.STATE_REDIS_URL == settings.REDIS_URL:
        errors.append(
            checks.Warning(
                "Idempotency-Key records and rate-limit counters share REDIS_URL with the response cache, whose "
                "size anonymous GETs decide: when it evicts, a retried POST can store a second item.",
                hint="Set STATE_REDIS_URL to a Redis of its own with `maxmemory-policy noeviction`.",
                id="items.W002",
            )
        )
    return errors


@checks.register("items")
def consistent_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Settings that are each valid alone but contradict each other."""
    errors: list[checks.CheckMessage] = []
    if not settings.SHED_LIMIT_MIN <= settings.SHED_LIMIT_INITIAL <= settings.SHED_LIMIT_MAX:
        errors.append(
            checks.Error(
                f"SHED_LIMIT_MIN ({settings.SHED_LIMIT_MIN}) <= SHED_LIMIT_INITIAL ({settings.SHED_LIMIT_INITIAL}) "
                f"<= SHED_LIMIT_MAX ({settings.SHED_LIMIT_MAX}) does not hold.",
                hint="The adaptive limit starts at SHED_LIMIT_INITIAL and stays between the other two.",
                id="items.E004",
            )
        )
    if not settings.BACKPRESSURE_LOW < settings.BACKPRESSURE_HIGH:
        errors.append(
            checks.Error(
                f"BACKPRESSURE_LOW ({settings.BACKPRESSURE_LOW}) must be below BACKPRESSURE_HIGH "
                f"({settings.BACKPRESSURE_HIGH}).",
                hint="POSTs are delayed between the two watermarks and refused above the high one.",
                id="items.E005",
            )
        )
    return errors


# What Django's security.W001/W002 look for, sent here by the inline classes (project/middleware/inline.py).
SECURITY_MIDDLEWARE = (
    "project.middleware.inline.SecurityMiddleware",
    "project.middleware.inline.XFrameOptionsMiddleware",
)


@checks.register("items", checks.Tags.security)
def security_headers_middleware(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Django's W001/W002 are silenced because they look for Django's own class paths; this looks for ours."""
    missing = [name for name in SECURITY_MIDDLEWARE if name not in settings.MIDDLEWARE]
    if not missing:
        return []
    return [
        checks.Warning(
            f"MIDDLEWARE lacks {', '.join(missing)}: responses go out without the security headers they send.",
            hint="Keep them in MIDDLEWARE (project/settings.py).",
            id="items.W001",
        )
    ]
