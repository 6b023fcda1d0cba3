"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in app/tasks.py."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("items")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _refuse_unsafe_production(**kwargs) -> None:
    from project.startup import refuse_unsafe_production

    refuse_unsafe_production()
