"""Celery tasks; thin wrappers over app.services."""

from celery import shared_task

from app.messaging import messages
from app.services import items_store


@shared_task(name=messages.TASK_NAME)
def items_store_task(items: list[dict]) -> int:
    """Store accepted items. The embedded default runs it in process for each POST (CELERY_TASK_ALWAYS_EAGER). On
    the real stack the worker's consumer step (app/messaging/consumer.py) never lets Celery run it per message:
    it reads the messages itself and calls this body once per batch, with its own ack and dead-letter policy.

    Idempotent: the insert skips ids already stored, so a retry stores each row once.
    """
    return items_store(payloads=items)
