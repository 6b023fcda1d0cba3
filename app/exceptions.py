"""Every error of the items domain, declaratively (status, code, detail, Retry-After).

project/errors.py holds the base class, the HTTP-level errors (bad request, not found, overloaded, ...) and turns
any ApiError into the one envelope."""

from project.errors import ApiError

# --- Idempotency-Key (app/idempotency.py) ----------------------------------------------------------------------


class IdempotencyConflict(ApiError):
    status, code = 422, "idempotency_conflict"
    detail = "This Idempotency-Key was already used with a different body; use a new key for a new item."


class IdempotencyUnavailable(ApiError):
    status, code, retry_after_s = 503, "idempotency_unavailable", 5
    detail = "The Idempotency-Key store is unreachable, so the item was not accepted; retry shortly."


class IdempotencyInProgress(ApiError):
    status, code, retry_after_s = 409, "idempotency_in_progress", 1
    detail = "A request with this Idempotency-Key is still being accepted; retry shortly."


# --- The write queue (app/messaging/) ------------------------------------------------------------------------


class QueueFull(ApiError):
    status, code, detail, retry_after_s = 503, "queue_full", "The write queue is full; retry shortly.", 2


class BrokerUnavailable(ApiError):
    status, code, retry_after_s = 503, "broker_unavailable", 5
    detail = "The write queue is unreachable, so the item was not accepted; retry shortly."


class PublishUnconfirmed(BrokerUnavailable):
    """The message may be in the queue although no confirm came back: the client sees broker_unavailable, and
    a retry with the same Idempotency-Key republishes the same id (stored once)."""

    detail = (
        "The write queue did not confirm the item in time, so it may or may not be accepted; retry with the same "
        "Idempotency-Key to get the same id and one item."
    )
