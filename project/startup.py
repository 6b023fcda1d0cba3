"""Start-up guard shared by the ASGI, WSGI and Celery entry points."""

from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError


def refuse_unsafe_production() -> None:
    """In production mode, refuse to start while a check tagged `items` fails (see project/checks.py)."""
    if not settings.PRODUCTION:
        return
    errors = [m for m in checks.run_checks(tags=["items"], include_deployment_checks=True) if m.is_serious()]
    if errors:
        lines = "\n".join(f"{e.id}: {e.msg} Hint: {e.hint}" for e in errors)
        raise SystemCheckError(f"Refusing to start in production mode:\n{lines}")
