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
from app.idempotency import (
    body_fingerprint,
    idempotency_accept,
    idempotency_claim,
    idempotency_release,
    idempotency_unconfirmed,
)
from app.ids import new_item_id, uuid7_ms
from app.models import Item
from app.queues import items_queue
from project.errors import BrokerUnavailable, QueueFull

logger = logging.getLogger(__name__)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# One quick reconnect covers a broker that restarted since our pooled connection was opened; more retries
# would only hold the client longer before the 503 it is going to get anyway.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


class PublishUnconfirmed(BrokerUnavailable):
    """The message may be in the queue although no confirm came back: the client sees broker_unavailable, and
    a retry with the same Idempotency-Key republishes the same id (stored once)."""

    detail = (
        "The write queue did not confirm the item in time, so it may or may not be accepted; retry with the same "
        "Idempotency-Key to get the same id and one item."
    )


def _nothing_sent(failures: list[BaseException]) -> bool:
    """True when every failed attempt provably left nothing with the broker: its connection was refused (no TCP
    connection, so no frame), or the broker nacked the message (reject-publish at x-max-length). Anything else —
    a confirm timeout, a connection reset or closed after the frames went out, a channel error — may come after
    RabbitMQ stored the message. kombu wraps the cause in its OperationalError, which says nothing by itself."""
    seen, pending = [], list(failures)
    while pending:
        exc = pending.pop()
        if exc is None or any(exc is other for other in seen):
            continue
        seen.append(exc)
        pending += [exc.__cause__, exc.__context__]
    causes = [exc for exc in seen if not isinstance(exc, BrokerError)]
    return bool(causes) and all(isinstance(exc, ConnectionRefusedError | MessageNacked) for exc in causes)


def _publish(payload: dict) -> None:
    """Publish a persistent message and return only once RabbitMQ has confirmed it (CELERY_BROKER_TRANSPORT_
    OPTIONS["confirm_publish"]): after this, a broker crash cannot lose it. Any failure is a 503: QueueFull or
    BrokerUnavailable when nothing reached the broker, PublishUnconfirmed when the message may have."""
    from app.tasks import items_store_task  # app.tasks imports this module

    retried: list[BaseException] = []  # kombu's errback sees each failure it retries after
    started = time.perf_counter()
    try:
        items_store_task.apply_async(
            args=[[payload]],
            queue=items_queue(),
            retry_policy={**_PUBLISH_RETRY_POLICY, "errback": lambda exc, _interval_s: retried.append(exc)},
            confirm_timeout=settings.PUBLISH_CONFIRM_TIMEOUT_S,
        )
    # OSError: refused, reset, confirm timeout (socket.timeout). AMQPError: channel errors Celery does not wrap,
    # e.g. PRECONDITION_FAILED when the queue exists with other arguments, or a permission refused.
    # MessageNacked: our queue nacks only when it is at x-max-length (reject-publish).
    except (MessageNacked, BrokerError, OSError, AMQPError) as exc:
        if not _nothing_sent([*retried, exc]):
            metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
            metrics.publish_unconfirmed.inc()
            logger.warning("publish unconfirmed (%r): answering 503; the message may be queued", exc)
            raise PublishUnconfirmed() from exc
        if isinstance(exc, MessageNacked):
            metrics.publish_failed.labels(reason=QueueFull.code).inc()
            raise QueueFull() from exc
        metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
        logger.warning("publish failed, answering 503: %r", exc)
        raise BrokerUnavailable() from exc
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.published.inc()


def item_accept(*, name: str, description: str, idempotency_key: str | None = None) -> uuid.UUID:
    """Assign the item its id and hand it to the worker; returns the id the client will GET.

    With an Idempotency-Key, a replay of the same body returns the first id and publishes nothing; a retry after
    an attempt that may have reached the queue (PublishUnconfirmed) publishes that attempt's id and payload
    again, so the item is stored once whichever of the two the worker sees.
    """
    item_id = new_item_id()
    fields = {"name": name, "description": description}
    fingerprint = body_fingerprint(fields)
    claim = None
    if idempotency_key:
        claim = idempotency_claim(key=idempotency_key, fingerprint=fingerprint, item_id=item_id)
        if claim.accepted:
            return claim.item_id
        item_id = claim.item_id
    # From the id, not the clock: a republished item keeps the created_at of its first attempt.
    created_at = dt.datetime.fromtimestamp(uuid7_ms(item_id) / 1000, tz=dt.UTC)
    try:
        backpressure_admit()  # may wait (queue filling) or raise QueueFull (over the high watermark)
    except Exception:
        if claim:
            idempotency_release(claim=claim)  # nothing was published
        raise
    try:
        _publish({"id": str(item_id), **fields, "created_at": _rfc3339(created_at)})
    except (QueueFull, BrokerUnavailable) as exc:
        if claim and not isinstance(exc, PublishUnconfirmed):
            idempotency_release(claim=claim)
        elif claim:
            idempotency_unconfirmed(claim=claim)
        raise
    except BaseException:
        if claim:
            idempotency_unconfirmed(claim=claim)  # an unforeseen failure: the message may have gone out
        raise
    if claim:
        idempotency_accept(claim=claim, fingerprint=fingerprint)
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
