"""Start-up guard shared by the ASGI, WSGI and Celery entry points."""

from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError


def refuse_misconfiguration() -> None:
    """Refuse to start while a check tagged `items` fails (project/checks.py; the production ones only bite in
    production mode)."""
    errors = [m for m in checks.run_checks(tags=["items"], include_deployment_checks=True) if m.is_serious()]
    if errors:
        lines = "\n".join(f"{e.id}: {e.msg} Hint: {e.hint}" for e in errors)
        mode = "production" if settings.PRODUCTION else "development"
        raise SystemCheckError(f"Refusing to start in {mode} mode:\n{lines}")
