"""The worker side of the write path: a Celery consumer step that stores `items.store` messages in batches.

Celery runs one task per message; at thousands of POSTs a second that is one INSERT and one commit per item.
This step consumes the `items` queue itself and executes the same task for many messages at once: one
`INSERT … ON CONFLICT (id) DO NOTHING` per batch, then acks every message of the batch (acks late: a worker
killed mid-batch leaves them unacked and RabbitMQ redelivers them; the insert ignores ids already stored).

Failure policy:
- a transient database error (connection refused or lost: PgBouncer or PostgreSQL down) retries the whole batch
  with exponential backoff and jitter, for as long as it takes, holding the messages unacked — nothing is lost;
- any other error isolates the batch: each message is stored alone, and the items of one that still fails each
  alone, up to MAX_ATTEMPTS tries; an item that still fails (it can never be stored) is copied to the dead-letter
  queue with the error, in a message of the items of its message that failed, and its message acked, while the
  rest are stored. `manage.py items_deadletters`
  lists, shows and replays them;
- a failed bump of the response cache's version after a commit is retried with backoff before the acks, then
  owed and retried on every tick (app.cache.bump_version): the batch is acked either way.

Each stored item is logged (`item stored`, with item_id and the request_id of the POST, from the message's
`x-request-id` header, or its `x-request-ids` for a message of several POSTs' items). With tracing on, each
message gets a span from delivery to stored, the child of its publish (the `traceparent` header), and each batch
a span linked to those of its messages.
"""

import contextlib
import logging
import random
import time
from dataclasses import dataclass

from amqp.exceptions import AMQPError
from celery import bootsteps, current_app
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from kombu import Consumer, Message, Producer
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from app import cache, metrics
from app.messaging import messages
from app.messaging.queues import dead_letter_exchange, dead_letter_queue, items_queue
from project import logs, tracing

logger = logging.getLogger(__name__)

# Items per INSERT (a message of the write path may hold several: PUBLISH_BATCH_MAX). Larger batches amortise the
# commit further but hold more messages unacked (and so redelivered) if the worker dies; 250 rows is a few
# milliseconds of PostgreSQL time.
BATCH_MAX = 250
# Unacked messages RabbitMQ may hand us: two batches of one-item messages, so the next fills while one commits.
PREFETCH = 2 * BATCH_MAX
# How long a partial batch may wait for company. Bounds the added staleness; the Nginx micro-cache TTL is 1 s.
FLUSH_INTERVAL_S = 0.05
# Tries of a single message that fails for a reason other than a lost connection, before it is dead-lettered.
MAX_ATTEMPTS = 3
# Backoff of transient retries: 0.1 s doubling to 5 s, with full jitter so that workers do not retry in step.
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


def _ack(message: Message) -> None:
    """Ack, tolerating a channel that died since delivery: RabbitMQ then redelivers the message, and storing it
    again is a no-op (ON CONFLICT DO NOTHING)."""
    try:
        message.ack()
    except (AMQPError, OSError) as exc:
        logger.warning("ack failed (%r); the broker will redeliver and the insert will skip it", exc)


def _backoff_s(attempt: int) -> float:
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))  # noqa: S311 (jitter, not crypto)


@dataclass
class Delivery:
    """A message held for the next batch, with what its log lines and trace need from its headers."""

    items: list[dict]
    message: Message
    request_ids: list[str | None]  # of the POST that sent each item
    span: Span | None = None  # delivery to stored or dead-lettered; None with tracing off


def _message_span(message: Message) -> Span | None:
    if not tracing.enabled():
        return None
    parent = tracing.extract(message.headers)
    return tracing.tracer().start_span(f"store {messages.TASK_NAME}", context=parent, kind=SpanKind.CONSUMER)


def _batch_span(batch: list[Delivery]):
    if not tracing.enabled():
        return contextlib.nullcontext()
    links = [Link(d.span.get_span_context()) for d in batch if d.span is not None]
    return tracing.tracer().start_as_current_span(
        "store batch", links=links, attributes={"items.batch_messages": len(batch)}
    )


class ItemsBatchConsumer(bootsteps.ConsumerStep):
    """Consumes the `items` queue on a channel of its own and flushes a batch when full or every 50 ms."""

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.buffer: list[Delivery] = []
        self.buffered_items = 0
        self.dead_letter_producer: Producer | None = None

    def get_consumers(self, channel):
        dead_letter_queue(channel).declare()  # also declares the dead-letter exchange it is bound to
        self.dead_letter_producer = Producer(channel, exchange=dead_letter_exchange)
        return [
            Consumer(
                channel,
                queues=[items_queue()],
                callbacks=[self.on_message],
                accept=["json"],
                # A body that is not JSON (or another content type) would otherwise raise out of the consumer and
                # stop the worker, and the redelivered message stop the next one, until RabbitMQ's delivery limit.
                on_decode_error=self.on_decode_error,
                prefetch_count=PREFETCH,
            )
        ]

    def start(self, c):
        super().start(c)
        cache.owe_version_bump()  # paid on the first tick: see app.cache.bump_version
        self.flush_timer = c.timer.call_repeatedly(FLUSH_INTERVAL_S, self.tick)

    def tick(self) -> None:
        self.flush()
        cache.settle_version()

    def stop(self, c):
        # Also called when the broker connection is lost (Celery restarts its consumer steps): store what we
        # hold, since the rows are good either way; acks on the dead channel fail and RabbitMQ redelivers.
        self.flush_timer.cancel()
        self.flush()
        super().stop(c)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._dead_letter(message, exc, reason="malformed")

    def on_message(self, body, message: Message) -> None:
        try:
            items = messages.items_of(body)
        except ValueError as exc:
            self._dead_letter(message, exc, reason="malformed")
            return
        request_ids = [logs.sane_request_id(rid) for rid in messages.request_ids_of(message.headers, len(items))]
        self.buffer.append(Delivery(items, message, request_ids, _message_span(message)))
        self.buffered_items += len(items)
        if self.buffered_items >= BATCH_MAX:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer, self.buffered_items = self.buffer, [], 0
        with _batch_span(batch):
            self._flush(batch)

    def _flush(self, batch: list[Delivery]) -> None:
        attempt = 0
        while True:
            try:
                self._store([item for delivery in batch for item in delivery.items])
                break
            except Exception as exc:
                if not _is_transient(exc):
                    logger.warning("batch of %d failed (%r); storing its messages one by one", len(batch), exc)
                    self._store_one_by_one(batch)
                    return
                metrics.store_retries.inc()
                wait_s = _backoff_s(attempt)
                logger.warning("database unavailable (%s); retrying %d messages in %.2f s", exc, len(batch), wait_s)
                time.sleep(wait_s)
                attempt += 1
        # The task has bumped the cache version (or tried with backoff, then left it owed). Ack even if Redis
        # is still down: holding the batch would stall the worker once PREFETCH messages are unacked, turning a
        # cache outage into a write outage (queue_full), and the rows are committed. Staleness stays bounded: the
        # owed bump is retried on every tick until Redis answers, and a restarted worker bumps at start.
        for delivery in batch:
            _stored(delivery)
            _ack(delivery.message)
        metrics.batch_size.observe(sum(len(delivery.items) for delivery in batch))

    def _store(self, items: list[dict]) -> None:
        # The `items.store` task's body (app.tasks), run here for a whole batch; looked up by name because the
        # task calls app.services, which publishes through this package.
        store = current_app.tasks[messages.TASK_NAME]
        try:
            store(items)
        except Exception:
            # A broken connection must not be reused by the retry; Django reconnects on the next query.
            connection.close()
            raise
        finally:
            close_old_connections()
        metrics.stored_rows.inc(len(items))

    def _store_one_by_one(self, batch: list[Delivery]) -> None:
        """Each message alone; the items of one that still fails, each alone: only what cannot be stored is
        dead-lettered."""
        for delivery in batch:
            if len(delivery.items) > 1 and self._store_alone(delivery.items, attempts=1) is None:
                _stored(delivery)
                _ack(delivery.message)
                continue
            failed: list[tuple[dict, str | None]] = []
            error: Exception | None = None  # the last item's that failed
            for item, request_id in zip(delivery.items, delivery.request_ids, strict=True):
                if (item_error := self._store_alone([item], attempts=MAX_ATTEMPTS)) is not None:
                    failed.append((item, request_id))
                    error = item_error
            if error is not None:
                if len(failed) == len(delivery.items):
                    self._dead_letter(delivery.message, error, reason="unstorable", attempts=MAX_ATTEMPTS)
                else:  # the rest are stored: the failed items go to the dead-letter queue in a copy of their own
                    self._dead_letter_items(delivery.message, failed, error)
                if delivery.span is not None:
                    delivery.span.record_exception(error)
                    delivery.span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
            _stored(delivery, failed=frozenset(id(item) for item, _ in failed))
            if len(failed) < len(delivery.items):
                _ack(delivery.message)  # (a wholly dead-lettered message was acked by _dead_letter)

    def _store_alone(self, items: list[dict], *, attempts: int) -> Exception | None:
        """Store these items on their own, waiting out database outages and trying other errors up to `attempts`
        times; the last error when they cannot be stored."""
        failures, transient_retries = 0, 0
        while True:
            try:
                self._store(items)
                metrics.batch_size.observe(len(items))
                return None
            except Exception as exc:
                if _is_transient(exc):  # the database went away meanwhile: wait for it, count no attempt
                    metrics.store_retries.inc()
                    time.sleep(_backoff_s(transient_retries))
                    transient_retries += 1
                    continue
                failures += 1
                if failures >= attempts:
                    return exc
                time.sleep(_backoff_s(failures))

    def _dead_letter(self, message: Message, exc: Exception, *, reason: str, attempts: int = 1) -> None:
        """Copy the message to the dead-letter queue with why it failed, then ack the original.

        Publish before ack: a crash in between leaves a duplicate in the dead-letter queue, never a loss
        (replaying it twice is harmless, the insert is idempotent).
        """
        logger.error("dead-lettering a message (%s after %d attempts): %r", reason, attempts, exc)
        assert self.dead_letter_producer is not None  # made with the consumers, before any delivery
        self.dead_letter_producer.publish(
            message.body,
            routing_key=dead_letter_queue.routing_key,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=messages.dead_letter_headers(message.headers, exc, reason=reason, attempts=attempts),
            delivery_mode=2,
            declare=[dead_letter_queue],
        )
        _ack(message)
        metrics.dead_lettered.labels(reason=reason).inc()

    def _dead_letter_items(self, message: Message, failed: list[tuple[dict, str | None]], exc: Exception) -> None:
        """Copy the items of a message that cannot be stored to the dead-letter queue, as a message of their own
        with the original's headers (and these items' request ids), why it failed and when."""
        logger.error(
            "dead-lettering %d of a message's items (unstorable after %d attempts): %r", len(failed), MAX_ATTEMPTS, exc
        )
        # Not the original's request ids, nor Celery's argsrepr: both name every item of it, the stored ones too.
        dropped = (*messages.REQUEST_ID_HEADERS, "argsrepr")
        original = {k: v for k, v in (message.headers or {}).items() if k not in dropped}
        items, ids = [item for item, _ in failed], messages.request_id_headers([rid for _, rid in failed])
        assert self.dead_letter_producer is not None  # made with the consumers, before any delivery
        self.dead_letter_producer.publish(
            messages.task_body(items),
            routing_key=dead_letter_queue.routing_key,
            serializer="json",
            headers=messages.dead_letter_headers({**original, **ids}, exc, reason="unstorable", attempts=MAX_ATTEMPTS),
            delivery_mode=2,
            declare=[dead_letter_queue],
        )
        metrics.dead_lettered.labels(reason="unstorable").inc()


def _stored(delivery: Delivery, failed: frozenset[int] = frozenset()) -> None:
    """One line per stored item of the delivery (all but those in `failed`, by id()), under the request that sent
    it; the end of its message's span."""
    for item, request_id in zip(delivery.items, delivery.request_ids, strict=True):
        if id(item) not in failed:
            by = {"request_id": request_id} if request_id else {}
            logger.info("item stored", extra={"item_id": item.get("id"), **by})
    if delivery.span is not None:
        delivery.span.end()
