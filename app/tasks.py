"""Celery tasks; thin wrappers over app.services."""

from celery import shared_task


@shared_task(name="items.store")
def items_store_task(items: list[dict]) -> int:
    """Store accepted items.

    Idempotent: the insert skips ids already stored, so a redelivery after a worker crash or a client retry
    stores each row once. Acknowledged late (CELERY_TASK_ACKS_LATE), after the rows are committed.
    """
    from app.services import items_store  # app.services imports this module to publish

    return items_store(payloads=items)
