"""The Celery app: configured from Django settings (CELERY_*), tasks in app/tasks.py. The items app adds its
batching consumer step (app/messaging/consumer.py) when Django loads it (app/apps.py)."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("items")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _on_worker_init(**kwargs) -> None:
    from django.conf import settings
    from prometheus_client import start_http_server

    from project.startup import refuse_misconfiguration

    refuse_misconfiguration()
    # The worker's metrics live in its main process (where the consumer step runs): served on a port of
    # their own, for Prometheus to scrape beside the web tier's /metrics.
    if settings.WORKER_METRICS_PORT:
        start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDR)
