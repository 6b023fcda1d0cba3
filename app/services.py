"""Writes: accepting an item (API side) and storing a batch of them (worker side)."""

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from asgiref.sync import sync_to_async

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
from app.messaging.backpressure import abackpressure_admit, backpressure_admit
from app.messaging.publish import publish_item
from app.models import Item
from project.errors import Overloaded

_T = TypeVar("_T")


def item_accept(*, name: str, description: str, idempotency_key: str | None = None) -> uuid.UUID:
    """Assign the item its id and hand it to the worker; returns the id the client will GET.

    With an Idempotency-Key, a replay of the same body returns the first id and publishes nothing; a retry after
    an attempt that may have reached the queue (PublishUnconfirmed) publishes that attempt's id and payload
    again, so the item is stored once whichever of the two the worker sees.
    """
    accept = _Acceptance(name=name, description=description, idempotency_key=idempotency_key)
    if accept.claim and accept.claim.accepted:
        return accept.claim.item_id
    try:
        backpressure_admit()  # may wait (queue filling) or raise QueueFull (over the high watermark)
        accept.publishing = True
        publish_item(accept.payload)
    except BaseException as exc:
        accept.failed(exc)
        raise
    accept.confirmed()
    return accept.item_id


async def aitem_accept(
    *, name: str, description: str, idempotency_key: str | None, publish: Callable[[dict], Awaitable[None]]
) -> uuid.UUID:
    """item_accept on the event loop (app/write_path.py), publishing with `publish` (the process's AsyncPublisher).

    The same steps; only the Idempotency-Key records are read and written in a thread (Django's cache API is
    synchronous, and a claim may wait for another request's publish), so a POST without a key touches no thread.
    """
    if idempotency_key:
        accept = await _in_thread(_Acceptance)(name=name, description=description, idempotency_key=idempotency_key)
    else:
        accept = _Acceptance(name=name, description=description, idempotency_key=None)
    if accept.claim and accept.claim.accepted:
        return accept.claim.item_id
    try:
        await abackpressure_admit()
        accept.publishing = True
        await publish(accept.payload)
    except BaseException as exc:
        if accept.claim:
            await _in_thread(accept.failed)(exc)
        raise
    if accept.claim:
        await _in_thread(accept.confirmed)()
    return accept.item_id


# Threads for the Idempotency-Key store calls of the write path: a claim can wait seconds for another request's
# publish, so they get a pool of their own rather than asgiref's default one (a few threads, shared).
_STATE_THREADS = ThreadPoolExecutor(32, thread_name_prefix="idempotency")


def _in_thread(fn: Callable[..., _T]) -> Callable[..., Awaitable[_T]]:
    return sync_to_async(fn, thread_sensitive=False, executor=_STATE_THREADS)


class _Acceptance:
    """One POST's way through acceptance: its id (an Idempotency-Key's own, when it has one), its payload, and
    what its outcome does to the key's record."""

    def __init__(self, *, name: str, description: str, idempotency_key: str | None) -> None:
        self.item_id = new_item_id()
        fields = {"name": name, "description": description}
        self.fingerprint = body_fingerprint(fields)
        self.claim = None
        if idempotency_key:
            self.claim = idempotency_claim(key=idempotency_key, fingerprint=self.fingerprint, item_id=self.item_id)
            self.item_id = self.claim.item_id
        self.publishing = False  # set just before the publish: from then on the message may reach the queue
        # From the id, not the clock: a republished item keeps the created_at of its first attempt.
        created_at = dt.datetime.fromtimestamp(uuid7_ms(self.item_id) / 1000, tz=dt.UTC)
        self.payload = messages.item_payload(item_id=str(self.item_id), **fields, created_at=rfc3339(created_at))

    def failed(self, exc: BaseException) -> None:
        """Release the key when provably nothing was published, else keep it bound to this id (a retry publishes
        it again). An unforeseen failure during the publish counts as "may have gone out"."""
        if not self.claim:
            return
        nothing_sent = not self.publishing or (
            isinstance(exc, QueueFull | BrokerUnavailable | Overloaded) and not isinstance(exc, PublishUnconfirmed)
        )
        if nothing_sent:
            idempotency_release(claim=self.claim)
        else:
            idempotency_unconfirmed(claim=self.claim)

    def confirmed(self) -> None:
        if self.claim:
            idempotency_accept(claim=self.claim, fingerprint=self.fingerprint)


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
