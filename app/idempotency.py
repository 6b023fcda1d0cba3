"""Idempotency-Key records in the shared cache: the first request claims a key, replays get its id.

A record is {"fp": body fingerprint, "id": item id, "state": "pending" | "accepted"}. It is "pending" while its
owner publishes; a concurrent replay waits for "accepted" so that every 202 it returns is a true promise.
"""

import hashlib
import json
import logging
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from project.errors import ApiError, IdempotencyConflict

logger = logging.getLogger(__name__)
_CACHE_ERRORS = (ConnectionInterrupted, RedisError)

# How long a replay waits for the owner's publish before asking the client to retry; a publish with
# confirms normally takes milliseconds, and a broker outage fails the owner within its own timeout.
REPLAY_WAIT_S = 5.0
_POLL_S = 0.02
# A pending record outlives any publish (bounded by the broker timeouts) but not by much: if its owner dies
# between claim and confirm, the key is free again within a minute instead of answering 409 for a day.
PENDING_TTL_S = 60


class IdempotencyUnavailable(ApiError):
    status, code, retry_after_s = 503, "idempotency_unavailable", 5
    detail = "The Idempotency-Key store is unreachable, so the item was not accepted; retry shortly."


class IdempotencyInProgress(ApiError):
    status, code, retry_after_s = 409, "idempotency_in_progress", 1
    detail = "A request with this Idempotency-Key is still being accepted; retry shortly."


def _cache_key(key: str) -> str:
    return "idem:" + hashlib.sha256(key.encode()).hexdigest()


def body_fingerprint(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def idempotency_claim(*, key: str, fingerprint: str, item_id: uuid.UUID) -> uuid.UUID | None:
    """None when this request now owns the key and must publish; the earlier id when it is a replay.

    Raises IdempotencyConflict when the key was used with another body.
    """
    try:
        return _claim(key, fingerprint, item_id)
    except _CACHE_ERRORS as exc:
        # Without the store, a replay could not be recognised: refuse now, before anything is published.
        logger.warning("idempotency store unreachable (%r): answering 503", exc)
        raise IdempotencyUnavailable() from exc


def _claim(key: str, fingerprint: str, item_id: uuid.UUID) -> uuid.UUID | None:
    record = {"fp": fingerprint, "id": str(item_id), "state": "pending"}
    deadline = time.monotonic() + REPLAY_WAIT_S
    while True:
        if cache.add(_cache_key(key), record, timeout=PENDING_TTL_S):
            return None
        existing = cache.get(_cache_key(key))
        if existing is None:
            continue  # released by a failed publish (or expired) between our add and get: try to own it
        if existing["fp"] != fingerprint:
            raise IdempotencyConflict()
        if existing["state"] == "accepted":
            return uuid.UUID(existing["id"])
        if time.monotonic() > deadline:
            raise IdempotencyInProgress()
        time.sleep(_POLL_S)


def idempotency_accept(*, key: str, fingerprint: str, item_id: uuid.UUID) -> None:
    """Record the accepted id for 24 h. Called after the broker's confirm, so it must not fail the request: the
    item is queued whatever happens here (at worst a replay after PENDING_TTL_S would be a new item)."""
    record = {"fp": fingerprint, "id": str(item_id), "state": "accepted"}
    try:
        cache.set(_cache_key(key), record, timeout=settings.IDEMPOTENCY_TTL_S)
    except _CACHE_ERRORS as exc:
        logger.error("idempotency key for accepted item %s not recorded (%r)", item_id, exc)


def idempotency_release(*, key: str) -> None:
    """The owner could not publish: free the key so a retry can succeed (it expires on its own otherwise)."""
    try:
        cache.delete(_cache_key(key))
    except _CACHE_ERRORS as exc:
        logger.warning("idempotency key not released (%r); it expires in %d s", exc, PENDING_TTL_S)
