"""Celery tasks; thin wrappers over app.services."""

from celery import shared_task

from app.messaging import messages
from app.services import items_store


@shared_task(name=messages.TASK_NAME)
def items_store_task(items: list[dict]) -> int:
    """Store accepted items; runs only in the embedded default (CELERY_TASK_ALWAYS_EAGER: the POST runs it in
    process). On the real stack the worker never runs this body: its consumer step (app/messaging/consumer.py)
    reads the same messages in batches and calls the same service, with its own ack and dead-letter policy.

    Idempotent: the insert skips ids already stored, so a retry stores each row once.
    """
    return items_store(payloads=items)
