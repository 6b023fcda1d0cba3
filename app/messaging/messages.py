"""The shape of a write-path message, known here and nowhere else.

A message is a Celery `items.store` task (protocol 2, JSON): its body is `[args, kwargs, embed]` with
`args = [[item, ...]]`, so that the embedded default can run the same task in process (app/tasks.py) while the
worker's consumer step (consumer.py) reads the items straight from the body. An item is
{"id": uuid, "name": str, "description": str, "created_at": RFC 3339}.

Its AMQP headers are Celery's (`id`, `task`, ...) plus `x-request-id`, the id of the POST that accepted it (a
message the write path batched holds several POSTs' items instead, and `x-request-ids`, their ids in item order),
and, with tracing on, the W3C `traceparent` (and `tracestate`) of its publish: the worker logs and traces each
stored item under the request that sent it. A dead-lettered copy carries the original headers plus the `x-items-*`
headers below.
"""

import time

TASK_NAME = "items.store"

REQUEST_ID_HEADER = "x-request-id"
REQUEST_IDS_HEADER = "x-request-ids"  # of a message of several POSTs' items: one per item, "" for none
REQUEST_ID_HEADERS = (REQUEST_ID_HEADER, REQUEST_IDS_HEADER)
# Written and read by OpenTelemetry's W3C propagator (project/tracing.py), with `tracestate` when there is one.
TRACEPARENT_HEADER = "traceparent"

ERROR_HEADER = "x-items-error"
REASON_HEADER = "x-items-reason"
ATTEMPTS_HEADER = "x-items-attempts"
DEAD_LETTERED_AT_HEADER = "x-items-dead-lettered-at"
DEAD_LETTER_HEADERS = (ERROR_HEADER, REASON_HEADER, ATTEMPTS_HEADER, DEAD_LETTERED_AT_HEADER)
# Long enough for a traceback's last line, short enough for a header.
MAX_ERROR_CHARS = 1000


def item_payload(*, item_id: str, name: str, description: str, created_at: str) -> dict:
    return {"id": item_id, "name": name, "description": description, "created_at": created_at}


def request_id_headers(request_ids: list[str | None]) -> dict[str, object]:
    """Our headers of a message of these items, sent by the POSTs with these request ids (None: none known):
    `x-request-id` for one item, `x-request-ids` in item order ("" for none) for several."""
    if not any(request_ids):
        return {}
    if len(request_ids) == 1:
        return {REQUEST_ID_HEADER: request_ids[0]}
    return {REQUEST_IDS_HEADER: [rid or "" for rid in request_ids]}


def request_ids_of(headers: dict | None, count: int) -> list[str | None]:
    """The request id of each of the `count` items of a message with these headers (None: none known)."""
    headers = headers or {}
    ids = headers.get(REQUEST_IDS_HEADER)
    if isinstance(ids, list) and len(ids) == count:
        return [rid if isinstance(rid, str) and rid else None for rid in ids]
    return [headers.get(REQUEST_ID_HEADER)] * count


def task_args(items: list[dict]) -> tuple[list[dict]]:
    """The task's positional arguments for these items (what apply_async takes; a JSON list on the wire)."""
    return (items,)


def task_body(items: list[dict]) -> list:
    """The whole message body for these items, as Celery writes it (for tests and tools that publish raw)."""
    return [list(task_args(items)), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def items_of(body: object) -> list[dict]:
    """The items of one message body; ValueError when the body is not an `items.store` message."""
    args = body[0] if isinstance(body, list) and body else None
    items = args[0] if isinstance(args, list) and args else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"not an {TASK_NAME} message: {str(body)[:200]}")
    return items


def item_ids(body: object) -> list[str]:
    """The ids of the items in a message body, "?" for a body that is not ours (for listings)."""
    try:
        return [str(item.get("id")) for item in items_of(body)]
    except ValueError:
        return ["?"]


def dead_letter_headers(headers: dict | None, exc: Exception, *, reason: str, attempts: int) -> dict:
    """The original headers plus why and when the message was dead-lettered."""
    return {
        **(headers or {}),
        ERROR_HEADER: f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
        REASON_HEADER: reason,
        ATTEMPTS_HEADER: attempts,
        DEAD_LETTERED_AT_HEADER: time.time(),
    }


def replay_headers(headers: dict | None) -> dict:
    """Headers for a replayed copy: the dead-letter ones (ours and RabbitMQ's x-death) dropped."""
    return {k: v for k, v in (headers or {}).items() if k not in DEAD_LETTER_HEADERS and k != "x-death"}
