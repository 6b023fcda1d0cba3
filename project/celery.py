"""The Celery app: configured from Django settings (CELERY_*), tasks in app/tasks.py. The items app adds its
batching consumer step (app/messaging/consumer.py) when Django loads it (app/apps.py). The worker logs through
settings.LOGGING, as the web tier does (JSON lines in production), and traces when OTEL_EXPORTER_OTLP_ENDPOINT is
set."""

import logging.config
import os

from celery import Celery
from celery.signals import setup_logging, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("items")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _on_worker_init(**kwargs) -> None:
    from django.conf import settings
    from prometheus_client import start_http_server

    from project import tracing
    from project.startup import refuse_misconfiguration

    refuse_misconfiguration()
    # The main process runs the consumer step, so its spans are made here (its pool serves no items messages).
    tracing.setup("items-worker")
    # The worker's metrics live in its main process (where the consumer step runs): served on a port of
    # their own, for Prometheus to scrape beside the web tier's /metrics.
    if settings.WORKER_METRICS_PORT:
        start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDR)


@setup_logging.connect
def _on_setup_logging(**kwargs) -> None:
    """Connected, this replaces Celery's own setup (a text handler on the root logger, stdout redirected into
    it): the worker's records, Celery's included, go through settings.LOGGING's handlers and formats."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
