"""Writes: accepting an item (API side) and storing a batch of them (worker side)."""

import datetime as dt
import uuid

from app import cache
from app.exceptions import BrokerUnavailable, PublishUnconfirmed, QueueFull
from app.http import rfc3339
from app.idempotency import (
    body_fingerprint,
    idempotency_accept,
    idempotency_claim,
    idempotency_release,
    idempotency_unconfirmed,
)
from app.ids import new_item_id, uuid7_ms
from app.messaging import messages
from app.messaging.backpressure import backpressure_admit
from app.messaging.publish import publish_item
from app.models import Item


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
        publish_item(messages.item_payload(item_id=str(item_id), **fields, created_at=rfc3339(created_at)))
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
    cache.bump_version()
    return len(rows)
