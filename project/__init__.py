"""The Django project: settings, URLs, entry points, middleware and the Celery app."""

# Loaded with Django so that @shared_task binds to this app in web processes too.
from project.celery import app as celery_app

__all__ = ["celery_app"]
