"""Confirmed publish on the event loop: one AMQP connection and channel per web process, in confirm mode, with
the confirms pipelined. Hundreds of POSTs can wait for their confirm at once on that one channel, none of them
holding a thread, and RabbitMQ acknowledges them in bulk (`basic.ack` with `multiple`); the POSTs of one loop
turn share one message (group commit, AsyncPublisher below), so the write path costs a share of one frame set
out and back per item instead of a round trip (and, with kombu, three more for a declare and a bind) per
request. The guarantees are those of app/messaging/publish.py: a persistent message,
mandatory routing (a message no queue takes comes back and is a 503), and success only on the broker's ack.

Why aiormq: kombu and py-amqp are synchronous, so every waiting confirm is a blocked thread, and their confirm
mode waits after each publish; aio-pika is built on aiormq and adds reconnect machinery and a Message object per
publish that the hot path does not need. aiormq, maintained with aio-pika, tracks each delivery tag's confirm
itself, `multiple` acks and nacks included, and fails the confirm of a returned mandatory message (PublishError).

The message is the Celery `items.store` task message the kombu path sends (headers, properties and body from
Celery's own `as_task_v2`), with the items of several POSTs in its list and their request ids in `x-request-ids`
when there are several, so the worker's consumer step reads both alike.
"""

import asyncio
import contextlib
import contextvars
import logging
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from celery import current_app
from kombu.serialization import dumps
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind
from pamqp.commands import Basic

from app import metrics
from app.exceptions import BrokerUnavailable, PublishUnconfirmed, QueueFull
from app.messaging import messages
from app.messaging.queues import ITEMS_QUEUE, items_queue
from project import tracing
from project.errors import ApiError, Overloaded

logger = logging.getLogger(__name__)

PERSISTENT = 2  # AMQP delivery mode: written to disk (a quorum queue replicates it either way)


@dataclass
class _Waiting:
    """One POST's item, waiting for the batch that carries it to be confirmed."""

    payload: dict
    request_id: str | None
    span_context: SpanContext | None  # of this POST's publish span (None with tracing off)
    confirmed: asyncio.Future[None]


class AsyncPublisher:
    """The confirming publisher of one process, used only from its event loop.

    Group commit: the items of every POST that reaches publish during one turn of the event loop travel in one
    message (up to batch_max), published once and confirmed once. RabbitMQ's cost is per message — a quorum
    queue appends, replicates and confirms each — and so is the worker's (a delivery, a decode, an ack), so at
    hundreds of POSTs a second most of the broker's CPU went on per-message overhead of one-item messages. A POST
    waits for no timer: the batch leaves as soon as the loop has run every request already on its way.
    """

    def __init__(
        self, url: str, *, connect_timeout_s: float, confirm_timeout_s: float, max_in_flight: int, batch_max: int = 1
    ) -> None:
        self.url, self.connect_timeout_s, self.confirm_timeout_s = url, connect_timeout_s, confirm_timeout_s
        self.max_in_flight, self.batch_max = max_in_flight, batch_max
        self.in_flight = 0
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        # One connection attempt at a time, shared by every POST that arrives meanwhile: when the broker is down,
        # a burst waits for one refusal, not for one each.
        self._connecting: asyncio.Task | None = None
        self._batch: list[_Waiting] = []  # filling during this loop turn
        self._sending: set[asyncio.Task] = set()  # batches out, waiting for their confirm (kept from the GC)

    async def publish(self, payload: dict, *, request_id: str | None) -> None:
        """Return once RabbitMQ has confirmed a persistent copy. QueueFull / BrokerUnavailable: nothing reached the
        queue. PublishUnconfirmed: the message may have. Overloaded: too many confirms already outstanding."""
        if self.in_flight >= self.max_in_flight:
            metrics.publish_failed.labels(reason=Overloaded.code).inc()
            raise Overloaded("Too many writes are waiting for the broker; try again shortly.")
        span: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if tracing.enabled():
            span = tracing.tracer().start_as_current_span(
                f"publish {messages.TASK_NAME}", kind=SpanKind.PRODUCER, attributes={"items.item_id": payload["id"]}
            )
        started = time.perf_counter()
        self.in_flight += 1
        try:
            with span:
                span_context = trace.get_current_span().get_span_context() if tracing.enabled() else None
                await self._enqueue(_Waiting(payload, request_id, span_context, _future()))
        finally:
            self.in_flight -= 1
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.published.inc()

    def _enqueue(self, waiting: _Waiting) -> asyncio.Future[None]:
        self._batch.append(waiting)
        if len(self._batch) >= self.batch_max:
            self._flush()
        elif len(self._batch) == 1:
            # Queued behind every callback already ready, so the requests read this turn join the batch first;
            # in a context of its own, so the batch's log lines do not carry this POST's request id.
            asyncio.get_running_loop().call_soon(self._flush, context=contextvars.Context())
        return waiting.confirmed

    def _flush(self) -> None:
        batch = [w for w in self._batch if not w.confirmed.done()]  # a cancelled POST's item is not sent
        self._batch = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch), context=contextvars.Context())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        """Publish one message for the batch and settle every POST's wait with its outcome."""
        try:
            with _batch_span(batch) as headers:
                task_id = str(uuid.UUID(int=random.getrandbits(128), version=4))
                body, properties = _task_message(task_id, [w.payload for w in batch], headers)
                await self._publish(body, properties, len(batch))
        except asyncio.CancelledError:  # this task cancelled (the loop closing): the frames may have gone out
            _settle(batch, PublishUnconfirmed())
            raise
        except Exception as exc:
            _settle(batch, exc)
        else:
            _settle(batch, None)

    async def _publish(self, body: bytes, properties: Basic.Properties, items: int) -> None:
        channel = await self._open_channel(items)
        metrics.publish_batch_items.observe(items)
        try:
            async with asyncio.timeout(self.confirm_timeout_s):
                await channel.basic_publish(
                    body, exchange=ITEMS_QUEUE, routing_key=ITEMS_QUEUE, properties=properties, mandatory=True
                )
        except aiormq.exceptions.PublishError as exc:  # returned: no queue bound (deleted or unbound out of band)
            metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc(items)
            logger.error("publish returned unrouted: no queue is bound to the items exchange; answering 503")
            raise BrokerUnavailable("The write queue is missing on the broker, so the item was not accepted.") from exc
        except aiormq.exceptions.DeliveryError as exc:  # nacked: our queue does that only at x-max-length
            metrics.publish_failed.labels(reason=QueueFull.code).inc(items)
            raise QueueFull() from exc
        # A timeout, or the channel or connection closing, after the frames may have gone out: the broker may
        # hold the message. Start afresh on the next publish. A channel that closes under the publish has aiormq
        # cancel the confirm futures it holds, which reaches us as a CancelledError although nobody cancelled us.
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we were cancelled: not the channel's doing
            raise self._unconfirmed(channel, exc, items) from exc
        # Anything else: aiormq fails the confirms it holds with whatever closed the connection, a bare
        # `Exception` when nothing did (its FutureStore.reject_all); a channel found closed is a RuntimeError.
        # Whatever it is, the frames may have gone out.
        except Exception as exc:
            raise self._unconfirmed(channel, exc, items) from exc

    def _unconfirmed(self, channel: AbstractChannel, exc: BaseException, items: int) -> PublishUnconfirmed:
        """The error for a publish whose frames may have reached the broker; the next publish starts afresh."""
        self._forget(channel)
        metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc(items)
        metrics.publish_unconfirmed.inc(items)
        logger.warning("publish of %d items unconfirmed (%r): answering 503; the message may be queued", items, exc)
        return PublishUnconfirmed()

    async def _open_channel(self, items: int) -> AbstractChannel:
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
            metrics.publish_failed.labels(reason=BrokerUnavailable.code).inc(items)
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


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@contextlib.contextmanager
def _batch_span(batch: list[_Waiting]) -> Iterator[dict[str, Any]]:
    """The headers of the batch's message: our request id(s), and the trace context the worker continues.

    One item: its POST's request id and publish span, as a message of the Django path. More: the request ids in
    item order, and (with tracing on) a producer span of the batch, the child of the first sampled POST's publish
    span (so that it is sampled with it) and linked to the others'."""
    contexts = [w.span_context for w in batch if w.span_context is not None]
    headers: dict[str, Any] = messages.request_id_headers([w.request_id for w in batch])
    if len(batch) == 1 or not contexts:
        if contexts:
            tracing.inject(headers, context=trace.set_span_in_context(NonRecordingSpan(contexts[0])))
        yield headers
        return
    parent = next((c for c in contexts if c.trace_flags.sampled), contexts[0])
    with tracing.tracer().start_as_current_span(
        f"publish {messages.TASK_NAME}",
        context=trace.set_span_in_context(NonRecordingSpan(parent)),
        kind=SpanKind.PRODUCER,
        links=[Link(c) for c in contexts if c is not parent],
        attributes={"items.batch_items": len(batch)},
    ):
        tracing.inject(headers)
        yield headers


def _settle(batch: list[_Waiting], error: Exception | None) -> None:
    """Every POST of the batch still waiting gets the batch's outcome (a cancelled one is gone already)."""
    for waiting in batch:
        if not waiting.confirmed.done():
            if error is None:
                waiting.confirmed.set_result(None)
            else:
                waiting.confirmed.set_exception(_own(error))


def _own(exc: Exception) -> Exception:
    """A POST's own instance of its batch's error: one instance raised in many tasks would carry each one's
    traceback in turn."""
    if not isinstance(exc, ApiError):
        return exc  # a bug (InternalError for the client), not worth a copy
    copy = type(exc)(exc.detail, fields=exc.fields, retry_after_s=exc.retry_after_s)
    copy.__cause__ = exc.__cause__
    return copy


def _task_message(task_id: str, items: list[dict], headers: dict[str, Any]) -> tuple[bytes, Basic.Properties]:
    """The body and properties of the Celery task message apply_async would send for these items."""
    # argsrepr given: Celery's own saferepr of the arguments is a tenth of this path's CPU; the ids say enough.
    argsrepr = "[[" + ", ".join(f"{{'id': {item['id']!r}}}" for item in items) + "]]"
    message = current_app.amqp.as_task_v2(
        task_id, messages.TASK_NAME, args=messages.task_args(items), argsrepr=argsrepr
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
