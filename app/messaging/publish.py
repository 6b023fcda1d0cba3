"""Confirmed publish of one accepted item: it returns only once RabbitMQ has confirmed a persistent message on
the durable `items` queue, so that a 202 is a promise a broker crash cannot break. The message carries the
request id (and, with tracing on, the publish span's context) in its headers, for the worker's log and trace."""

import contextlib
import logging
import time
import uuid
from typing import Any

from amqp.exceptions import AMQPError, MessageNacked
from celery import Task, current_app
from django.conf import settings
from kombu.connection import maybe_channel
from kombu.exceptions import OperationalError as BrokerError
from opentelemetry.trace import SpanKind

from app import metrics
from app.exceptions import BrokerUnavailable, PublishUnconfirmed, QueueFull
from app.messaging import messages
from app.messaging.queues import items_queue
from project import logs, tracing

logger = logging.getLogger(__name__)

# One quick reconnect covers a broker that restarted since our pooled connection was opened; more retries
# would only hold the client longer before the 503 it is going to get anyway.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def nothing_sent(failures: list[BaseException]) -> bool:
    """True when every failed attempt provably left nothing with the broker: its connection was refused (no TCP
    connection, so no frame), or the broker nacked the message (reject-publish at x-max-length). Anything else —
    a confirm timeout, a connection reset or closed after the frames went out, a channel error — may come after
    RabbitMQ stored the message. kombu wraps the cause in its OperationalError, which says nothing by itself."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = list(failures)
    while pending:
        exc = pending.pop()
        if exc is None or any(exc is other for other in seen):
            continue
        seen.append(exc)
        pending += [exc.__cause__, exc.__context__]
    causes = [exc for exc in seen if not isinstance(exc, BrokerError)]
    return bool(causes) and all(isinstance(exc, ConnectionRefusedError | MessageNacked) for exc in causes)


# Task ids RabbitMQ handed back unrouted (mandatory publish, no queue bound: the `items` queue deleted or unbound
# out of band). The broker sends the return before the confirm, while the publishing thread waits for it, so the
# id is here by the time apply_async returns.
_returned: set[str] = set()


def _on_return(exc, exchange: str, routing_key: str, message) -> None:
    task_id = (message.properties or {}).get("correlation_id")
    if task_id:
        _returned.add(task_id)


def _watch_returns(producer) -> None:
    """Have this producer's channel report returns to _on_return instead of raising inside the confirm wait (which
    would leave that confirm unread on the channel); kept across reconnects (kombu re-adds `on_return`)."""
    if producer.on_return is not _on_return:
        producer.on_return = _on_return
        channel: Any = maybe_channel(producer.channel)  # kombu's stubs lack a channel's `events`
        channel.events["basic_return"].add(_on_return)


def publish_item(payload: dict) -> None:
    """Publish a persistent message and return only once RabbitMQ has confirmed it (CELERY_BROKER_TRANSPORT_
    OPTIONS["confirm_publish"]): after this, a broker crash cannot lose it. Any failure is a 503: QueueFull or
    BrokerUnavailable when nothing reached the broker, PublishUnconfirmed when the message may have."""
    # Looked up by name, not imported: app.tasks runs app.services, which publishes through this module.
    task = current_app.tasks[messages.TASK_NAME]
    task_id = str(uuid.uuid4())
    retried: list[BaseException] = []  # kombu's errback sees each failure it retries after
    headers = messages.request_id_headers([logs.request_id.get()])
    options: dict[str, Any] = {
        "args": messages.task_args([payload]),
        "task_id": task_id,
        "headers": headers,  # Celery adds them to the message's own headers
        "queue": items_queue(),
        "retry_policy": {**_PUBLISH_RETRY_POLICY, "errback": lambda exc, _interval_s: retried.append(exc)},
        "confirm_timeout": settings.PUBLISH_CONFIRM_TIMEOUT_S,  # kombu's, passed on
    }
    started = time.perf_counter()
    span: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if tracing.enabled():
        span = tracing.tracer().start_as_current_span(
            f"publish {messages.TASK_NAME}", kind=SpanKind.PRODUCER, attributes={"items.item_id": payload["id"]}
        )
    with span:
        tracing.inject(headers)  # the publish span's traceparent (nothing when tracing is off)
        _publish(task, options, task_id, retried)
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.published.inc()


def _publish(task: Task, options: dict[str, Any], task_id: str, retried: list[BaseException]) -> None:
    """apply_async, each failure raised as its 503 (publish_item says which)."""
    try:
        if current_app.conf.task_always_eager:  # the embedded default: the task runs here, nothing is published
            task.apply_async(**options)
        else:
            with current_app.producer_or_acquire() as producer:
                _watch_returns(producer)
                # mandatory: an unroutable message comes back (_on_return) instead of vanishing, confirmed.
                task.apply_async(**options, producer=producer, mandatory=True)  # type: ignore[call-arg]  # kombu's
    # OSError: refused, reset, confirm timeout (socket.timeout). AMQPError: channel errors Celery does not wrap,
    # e.g. PRECONDITION_FAILED when the queue exists with other arguments, or a permission refused.
    # MessageNacked: our queue nacks only when it is at x-max-length (reject-publish).
    except (MessageNacked, BrokerError, OSError, AMQPError) as exc:
        if not nothing_sent([*retried, exc]):
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
    if task_id in _returned:
        _returned.discard(task_id)
        metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
        logger.error("publish returned unrouted: no queue is bound to the items exchange; answering 503")
        raise BrokerUnavailable("The write queue is missing on the broker, so the item was not accepted.")
