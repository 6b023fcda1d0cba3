"""Idempotency-Key records in the shared cache: a key is bound to one item id, and every retry gets that id.

Two entries per key:
- the record {"fp": body fingerprint, "id": item id, "state": "pending" | "accepted"}, kept IDEMPOTENCY_TTL_S
  from the first attempt. It binds the key to the id before anything is published, and stays bound while any
  attempt might have reached the broker: "pending" means the item may or may not be queued;
- the owner lock, held PENDING_TTL_S at most by the one request publishing for the key right now, so that
  concurrent retries wait for its outcome instead of publishing beside it.

A retry of a "pending" key whose owner is gone (it failed, or died) becomes the owner and publishes the same id
and payload again: if an earlier attempt did reach the queue, the consumer's INSERT … ON CONFLICT (id) DO
NOTHING stores one row. Only a failure that proves nothing was sent, on the attempt that created the record,
releases the key (idempotency_release). A replay that waits for an owner returns only an "accepted" id, so every
202 is a true promise.
"""

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from app.exceptions import IdempotencyConflict, IdempotencyInProgress, IdempotencyUnavailable

logger = logging.getLogger(__name__)


def _state():
    """The store that never evicts (CACHES["state"]: STATE_REDIS_URL); looked up per call, as Django's caches
    are per thread."""
    return caches["state"]


_CACHE_ERRORS = (ConnectionInterrupted, RedisError)

# How long a replay waits for the owner's publish before asking the client to retry; a publish with
# confirms normally takes milliseconds, and a broker outage fails the owner within its own timeout.
REPLAY_WAIT_S = 5.0
_POLL_S = 0.02
# The owner lock outlives any publish (bounded by the broker timeouts, a few seconds) by far, so two owners never
# overlap; if its owner dies between claim and confirm, a retry takes over within a minute. (Were they ever to
# overlap, both would publish the same id: one row still.)
PENDING_TTL_S = 60


@dataclass(frozen=True)
class IdempotencyClaim:
    """What idempotency_claim decided: return `item_id` as it is (`accepted`), or own the key and publish it."""

    key: str
    item_id: uuid.UUID
    accepted: bool  # an earlier request was confirmed: answer its id and publish nothing
    first: bool = False  # this request bound the key: no earlier attempt can have reached the broker
    token: str = ""  # the owner lock's value


def _cache_key(key: str) -> str:
    return "idem:" + hashlib.sha256(key.encode()).hexdigest()


def _lock_key(key: str) -> str:
    return "idem-owner:" + hashlib.sha256(key.encode()).hexdigest()


def body_fingerprint(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def idempotency_claim(*, key: str, fingerprint: str, item_id: uuid.UUID) -> IdempotencyClaim:
    """Either an accepted claim (a replay: its id) or an owned one: the caller publishes claim.item_id — the new
    `item_id`, or the id an earlier unconfirmed attempt bound the key to — then calls idempotency_accept, or
    idempotency_release / idempotency_unconfirmed when the publish failed.

    Raises IdempotencyConflict when the key was used with another body, IdempotencyInProgress when another
    request keeps publishing for it, IdempotencyUnavailable when the store is unreachable.
    """
    token = uuid.uuid4().hex
    try:
        return _claim(key, fingerprint, item_id, token)
    except _CACHE_ERRORS as exc:
        # Without the store, a replay could not be recognised: refuse now, before anything is published.
        logger.warning("idempotency store unreachable (%r): answering 503", exc)
        _forget_lock(key, token)
        raise IdempotencyUnavailable() from exc
    except Exception:
        _forget_lock(key, token)
        raise


def _claim(key: str, fingerprint: str, item_id: uuid.UUID, token: str) -> IdempotencyClaim:
    deadline = time.monotonic() + REPLAY_WAIT_S
    while True:
        existing = _state().get(_cache_key(key))
        if existing is not None:
            if existing["fp"] != fingerprint:
                raise IdempotencyConflict()
            if existing["state"] == "accepted":
                return IdempotencyClaim(key, uuid.UUID(existing["id"]), accepted=True)
        if _state().add(_lock_key(key), token, timeout=PENDING_TTL_S):
            # Owner now. Read the record again: it may have changed while we were not holding the lock.
            record = {"fp": fingerprint, "id": str(item_id), "state": "pending"}
            if _state().add(_cache_key(key), record, timeout=settings.IDEMPOTENCY_TTL_S):
                return IdempotencyClaim(key, item_id, accepted=False, first=True, token=token)
            existing = _state().get(_cache_key(key))
            if existing is None:  # expired in between: bind it afresh
                _state().set(_cache_key(key), record, timeout=settings.IDEMPOTENCY_TTL_S)
                return IdempotencyClaim(key, item_id, accepted=False, first=True, token=token)
            if existing["fp"] != fingerprint:
                _forget_lock(key, token)
                raise IdempotencyConflict()
            if existing["state"] == "accepted":
                _forget_lock(key, token)
                return IdempotencyClaim(key, uuid.UUID(existing["id"]), accepted=True)
            # Pending and nobody publishing: an earlier attempt failed ambiguously or its owner died. Publish
            # that attempt's id again.
            return IdempotencyClaim(key, uuid.UUID(existing["id"]), accepted=False, token=token)
        if time.monotonic() > deadline:
            raise IdempotencyInProgress()
        time.sleep(_POLL_S)


def idempotency_accept(*, claim: IdempotencyClaim, fingerprint: str) -> None:
    """Record the accepted id for IDEMPOTENCY_TTL_S. Called after the broker's confirm, so it must not fail the
    request: the item is queued whatever happens here (at worst a replay republishes the same id)."""
    record = {"fp": fingerprint, "id": str(claim.item_id), "state": "accepted"}
    try:
        _state().set(_cache_key(claim.key), record, timeout=settings.IDEMPOTENCY_TTL_S)
    except _CACHE_ERRORS as exc:
        logger.error("idempotency key for accepted item %s not recorded (%r)", claim.item_id, exc)
    _forget_lock(claim.key, claim.token)


def idempotency_release(*, claim: IdempotencyClaim) -> None:
    """The publish failed before anything reached the broker: free the key, so that a retry (even with another
    body) starts afresh. Only the attempt that bound the key may: after an earlier ambiguous attempt the item
    may be queued, so the key stays bound to its id (idempotency_unconfirmed)."""
    if not claim.first:
        idempotency_unconfirmed(claim=claim)
        return
    try:
        if _state().get(_lock_key(claim.key)) == claim.token:  # still ours: nobody took over after a lock expiry
            _state().delete(_cache_key(claim.key))
    except _CACHE_ERRORS as exc:
        logger.warning("idempotency key not released (%r); a retry will publish the same id", exc)
    _forget_lock(claim.key, claim.token)


def idempotency_unconfirmed(*, claim: IdempotencyClaim) -> None:
    """The publish may have reached the broker (confirm timeout, connection lost after sending): keep the key
    bound to the id, and let the next retry publish it again."""
    logger.warning("publish of item %s unconfirmed; its Idempotency-Key stays bound to it", claim.item_id)
    _forget_lock(claim.key, claim.token)


def _forget_lock(key: str, token: str) -> None:
    """Give up ownership (if still ours); when the store fails, the lock expires within PENDING_TTL_S."""
    try:
        if _state().get(_lock_key(key)) == token:
            _state().delete(_lock_key(key))
    except _CACHE_ERRORS as exc:
        logger.warning("idempotency owner lock not released (%r); it expires in %d s", exc, PENDING_TTL_S)
