"""Confirmed publish on the event loop: one AMQP connection and channel per web process, in confirm mode, with
the confirms pipelined. Hundreds of POSTs can wait for their confirm at once on that one channel, none of them
holding a thread, and RabbitMQ acknowledges them in bulk (`basic.ack` with `multiple`), so the write path costs
one frame out and a share of one frame back per item instead of a round trip (and, with kombu, three more for a
declare and a bind) per request. The guarantees are those of app/messaging/publish.py: a persistent message,
mandatory routing (a message no queue takes comes back and is a 503), and success only on the broker's ack.

Why aiormq: kombu and py-amqp are synchronous, so every waiting confirm is a blocked thread, and their confirm
mode waits after each publish; aio-pika is built on aiormq and adds reconnect machinery and a Message object per
publish that the hot path does not need. aiormq, maintained with aio-pika, tracks each delivery tag's confirm
itself, `multiple` acks and nacks included, and fails the confirm of a returned mandatory message (PublishError).

The message is the Celery `items.store` task message the kombu path sends (headers, properties and body from
Celery's own `as_task_v2`), so the worker's consumer step cannot tell the two apart.
"""

import asyncio
import contextlib
import logging
import random
import time
import uuid
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from celery import current_app
from kombu.serialization import dumps
from opentelemetry.trace import SpanKind
from pamqp.commands import Basic

from app import metrics
from app.exceptions import BrokerUnavailable, PublishUnconfirmed, QueueFull
from app.messaging import messages
from app.messaging.queues import ITEMS_QUEUE, items_queue
from project import tracing
from project.errors import Overloaded

logger = logging.getLogger(__name__)

PERSISTENT = 2  # AMQP delivery mode: written to disk (a quorum queue replicates it either way)


class AsyncPublisher:
    """The confirming publisher of one process, used only from its event loop."""

    def __init__(self, url: str, *, connect_timeout_s: float, confirm_timeout_s: float, max_in_flight: int) -> None:
        self.url, self.connect_timeout_s, self.confirm_timeout_s = url, connect_timeout_s, confirm_timeout_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        # One connection attempt at a time, shared by every POST that arrives meanwhile: when the broker is down,
        # a burst waits for one refusal, not for one each.
        self._connecting: asyncio.Task | None = None

    async def publish(self, payload: dict, *, request_id: str | None) -> None:
        """Return once RabbitMQ has confirmed a persistent copy. QueueFull / BrokerUnavailable: nothing reached the
        queue. PublishUnconfirmed: the message may have. Overloaded: too many confirms already outstanding."""
        if self.in_flight >= self.max_in_flight:
            metrics.publish_failed.labels(reason=Overloaded.code).inc()
            raise Overloaded("Too many writes are waiting for the broker; try again shortly.")
        task_id = str(uuid.UUID(int=random.getrandbits(128), version=4))
        headers = messages.publish_headers(request_id=request_id)
        span: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if tracing.enabled():
            span = tracing.tracer().start_as_current_span(
                f"publish {messages.TASK_NAME}", kind=SpanKind.PRODUCER, attributes={"items.item_id": payload["id"]}
            )
        started = time.perf_counter()
        self.in_flight += 1
        try:
            with span:
                tracing.inject(headers)
                body, properties = _task_message(task_id, payload, headers)
                await self._publish(body, properties)
        finally:
            self.in_flight -= 1
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.published.inc()

    async def _publish(self, body: bytes, properties: Basic.Properties) -> None:
        channel = await self._open_channel()
        try:
            async with asyncio.timeout(self.confirm_timeout_s):
                await channel.basic_publish(
                    body, exchange=ITEMS_QUEUE, routing_key=ITEMS_QUEUE, properties=properties, mandatory=True
                )
        except aiormq.exceptions.PublishError as exc:  # returned: no queue bound (deleted or unbound out of band)
            metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
            logger.error("publish returned unrouted: no queue is bound to the items exchange; answering 503")
            raise BrokerUnavailable("The write queue is missing on the broker, so the item was not accepted.") from exc
        except aiormq.exceptions.DeliveryError as exc:  # nacked: our queue does that only at x-max-length
            metrics.publish_failed.labels(reason=QueueFull.code).inc()
            raise QueueFull() from exc
        # A timeout, or the channel or connection closing, after the frames may have gone out: the broker may
        # hold the message. Start afresh on the next publish.
        except (TimeoutError, aiormq.exceptions.AMQPError, OSError) as exc:
            self._forget(channel)
            metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
            metrics.publish_unconfirmed.inc()
            logger.warning("publish unconfirmed (%r): answering 503; the message may be queued", exc)
            raise PublishUnconfirmed() from exc

    async def _open_channel(self) -> AbstractChannel:
        """The open channel, or a new connection and channel (the topology declared once each); BrokerUnavailable
        when none can be had, and then provably nothing was sent."""
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        except Exception as exc:  # refused, timed out, authentication or declaration failed
            metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc()
            logger.warning("publish failed, answering 503: cannot open a channel to the broker: %r", exc)
            raise BrokerUnavailable() from exc

    async def _connect(self) -> AbstractChannel:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = None
        async with asyncio.timeout(self.connect_timeout_s):
            connection = await aiormq.connect(self.url)
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await _declare(channel)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
        self._connection, self._channel = connection, channel
        return channel

    def _forget(self, channel: AbstractChannel) -> None:
        if self._channel is channel:
            self._channel = None  # the next publish opens a new connection (and closes this one)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = None


async def _declare(channel: AbstractChannel) -> None:
    """The items exchange and queue, as kombu declares them (app/messaging/queues.py is the one definition)."""
    queue = items_queue()
    assert queue.exchange is not None and queue.name is not None
    await channel.exchange_declare(queue.exchange.name, exchange_type=queue.exchange.type, durable=True)
    await channel.queue_declare(queue.name, durable=True, arguments=queue.queue_arguments)
    await channel.queue_bind(queue.name, queue.exchange.name, routing_key=queue.routing_key)


def _task_message(task_id: str, payload: dict, headers: dict[str, str]) -> tuple[bytes, Basic.Properties]:
    """The body and properties of the Celery task message apply_async would send for this item."""
    # argsrepr given: Celery's own saferepr of the arguments is a tenth of this path's CPU; the id says enough.
    message = current_app.amqp.as_task_v2(
        task_id, messages.TASK_NAME, args=messages.task_args([payload]), argsrepr=f"[[{{'id': {payload['id']!r}}}]]"
    )
    content_type, content_encoding, body = dumps(message.body, serializer="json")
    properties: dict[str, Any] = message.properties
    return body.encode() if isinstance(body, str) else body, Basic.Properties(
        content_type=content_type,
        content_encoding=content_encoding,
        headers={**message.headers, **headers},
        delivery_mode=PERSISTENT,
        priority=0,
        correlation_id=properties["correlation_id"],
        reply_to=properties["reply_to"] or None,
        message_id=task_id,  # aiormq maps a returned message to its confirm by message_id
    )
