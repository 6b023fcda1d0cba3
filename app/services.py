"""Writes: accepting an item (API side) and storing a batch of them (worker side)."""

import datetime as dt
import logging
import time
import uuid

from amqp.exceptions import AMQPError, MessageNacked
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError

from app import metrics, response_cache
from app.backpressure import backpressure_admit
from app.idempotency import body_fingerprint, idempotency_accept, idempotency_claim, idempotency_release
from app.ids import uuid7
from app.models import Item
from app.queues import items_queue
from project.errors import BrokerUnavailable, QueueFull

logger = logging.getLogger(__name__)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# One quick reconnect covers a broker that restarted since our pooled connection was opened; more retries
# would only hold the client longer before the 503 it is going to get anyway.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def _publish(payload: dict) -> None:
    """Publish a persistent message and return only once RabbitMQ has confirmed it (CELERY_BROKER_TRANSPORT_
    OPTIONS["confirm_publish"]): after this, a broker crash cannot lose it. Any failure is a 503."""
    from app.tasks import items_store_task  # app.tasks imports this module

    started = time.perf_counter()
    try:
        items_store_task.apply_async(
            args=[[payload]],
            queue=items_queue(),
            retry_policy=_PUBLISH_RETRY_POLICY,
            confirm_timeout=settings.PUBLISH_CONFIRM_TIMEOUT_S,
        )
    except MessageNacked as exc:
        # Our queue nacks only when it is at x-max-length (reject-publish).
        metrics.publish_failed.labels(reason=QueueFull.code).inc()
        raise QueueFull() from exc
    # OSError: refused, reset, confirm timeout (socket.timeout). AMQPError: channel errors Celery does not wrap,
    # e.g. PRECONDITION_FAILED when the queue exists with other arguments, or a permission refused.
    except (BrokerError, OSError, AMQPError) as exc:
        metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
        logger.warning("publish failed, answering 503: %r", exc)
        raise BrokerUnavailable() from exc
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.published.inc()


def item_accept(*, name: str, description: str, idempotency_key: str | None = None) -> uuid.UUID:
    """Assign the item its id and hand it to the worker; returns the id the client will GET.

    With an Idempotency-Key, a replay of the same body returns the first id and publishes nothing.
    """
    now_ms = time.time_ns() // 1_000_000
    item_id = uuid7(now_ms)
    fields = {"name": name, "description": description}
    fingerprint = body_fingerprint(fields)
    if idempotency_key:
        earlier_id = idempotency_claim(key=idempotency_key, fingerprint=fingerprint, item_id=item_id)
        if earlier_id is not None:
            return earlier_id
    created_at = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
    try:
        backpressure_admit()  # may wait (queue filling) or raise QueueFull (over the high watermark)
        _publish({"id": str(item_id), **fields, "created_at": _rfc3339(created_at)})
    except Exception:
        if idempotency_key:
            idempotency_release(key=idempotency_key)
        raise
    if idempotency_key:
        idempotency_accept(key=idempotency_key, fingerprint=fingerprint, item_id=item_id)
    return item_id


def items_store(*, payloads: list[dict]) -> int:
    """Insert a batch in one statement; ids already stored are skipped (ON CONFLICT (id) DO NOTHING).

    Returns the number of payloads handled, stored now or before.
    """
    rows = [
        Item(
            id=uuid.UUID(payload["id"]),
            name=payload["name"],
            description=payload.get("description", ""),
            created_at=dt.datetime.fromisoformat(payload["created_at"]),
        )
        for payload in payloads
    ]
    Item.objects.bulk_create(rows, ignore_conflicts=True)  # autocommit: committed when this returns
    response_cache.bump_version()
    return len(rows)
