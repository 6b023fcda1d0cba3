"""The Celery app: configured from Django settings (CELERY_*), tasks in app/tasks.py, and the batching
consumer step that stores POSTed items (app/batch_consumer.py)."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("items")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _add_worker_steps() -> None:
    from app.batch_consumer import ItemsBatchConsumer

    app.steps["consumer"].add(ItemsBatchConsumer)


_add_worker_steps()


@worker_init.connect
def _on_worker_init(**kwargs) -> None:
    from django.conf import settings
    from prometheus_client import start_http_server

    from project.startup import refuse_unsafe_production

    refuse_unsafe_production()
    # The worker's metrics live in its main process (where the consumer step runs): served on a port of
    # their own, for Prometheus to scrape beside the web tier's /metrics.
    if settings.WORKER_METRICS_PORT:
        start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDR)
