"""Production refusals as system checks: `manage.py check --deploy` reports them, and production start-up
(project/startup.py) refuses to serve while any of them fails."""

from django.conf import settings
from django.core import checks


@checks.register("items", deploy=True)
def production_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.PRODUCTION:
        return []
    errors = []
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
    if not settings.ALLOWED_HOSTS:
        errors.append(
            checks.Error(
                "APP_ENV=production with an empty ALLOWED_HOSTS: every request would be refused.",
                hint="Set ALLOWED_HOSTS to the host names clients use, comma-separated (e.g. api.example.com).",
                id="items.E003",
            )
        )
    return errors
