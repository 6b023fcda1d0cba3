"""Confirmed publish of one accepted item: it returns only once RabbitMQ has confirmed a persistent message on
the durable `items` queue, so that a 202 is a promise a broker crash cannot break."""

import logging
import time

from amqp.exceptions import AMQPError, MessageNacked
from celery import current_app
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError

from app import metrics
from app.exceptions import BrokerUnavailable, PublishUnconfirmed, QueueFull
from app.messaging import messages
from app.messaging.queues import items_queue

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


def publish_item(payload: dict) -> None:
    """Publish a persistent message and return only once RabbitMQ has confirmed it (CELERY_BROKER_TRANSPORT_
    OPTIONS["confirm_publish"]): after this, a broker crash cannot lose it. Any failure is a 503: QueueFull or
    BrokerUnavailable when nothing reached the broker, PublishUnconfirmed when the message may have."""
    # Looked up by name, not imported: app.tasks runs app.services, which publishes through this module.
    task = current_app.tasks[messages.TASK_NAME]
    retried: list[BaseException] = []  # kombu's errback sees each failure it retries after
    started = time.perf_counter()
    try:
        task.apply_async(
            args=messages.task_args([payload]),
            queue=items_queue(),
            retry_policy={**_PUBLISH_RETRY_POLICY, "errback": lambda exc, _interval_s: retried.append(exc)},
            confirm_timeout=settings.PUBLISH_CONFIRM_TIMEOUT_S,  # type: ignore[call-arg]  # kombu's, passed on
        )
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
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.published.inc()
