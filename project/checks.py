"""Production refusals as system checks: `manage.py check --deploy` reports them, and production start-up
(project/startup.py) refuses to serve while any of them fails."""

from django.conf import settings
from django.core import checks


@checks.register("items", deploy=True)
def production_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.PRODUCTION:
        return []
    errors = []
    if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY or len(settings.SECRET_KEY) < 32:
        errors.append(
            checks.Error(
                "APP_ENV=production with the development SECRET_KEY (or one shorter than 32 characters).",
                hint='Set SECRET_KEY, e.g. to the output of: python -c "import secrets; print(secrets.token_urlsafe(50))"',
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
