"""A request's id, and with tracing on its trace context, travel in the message headers to the worker: a real
publish and consumption on kombu's in-memory transport (declare, publish, delivery, decoding; no broker)."""

import datetime as dt
import json
import uuid

import pytest
from celery import current_app
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from kombu import Connection, Message, Producer

from app.messaging import messages
from app.messaging.consumer import ItemsBatchConsumer
from app.messaging.publish import publish_item
from app.messaging.queues import items_queue
from app.models import Item
from project import logs
from tests.support import json_log_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(monkeypatch):
    """Celery publishing for real (not eagerly) to kombu's memory transport, whose state is per process; the
    `items` queue starts empty. Yields a channel on the same in-memory broker."""
    monkeypatch.setitem(current_app.conf, "task_always_eager", False)
    with Connection("memory://") as connection:
        channel = connection.channel()
        queue = items_queue()(channel)
        queue.declare()
        queue.purge()
        yield connection, channel


def _item() -> dict:
    now = dt.datetime.now(dt.UTC).isoformat()
    return messages.item_payload(item_id=str(uuid.uuid4()), name="n", description="", created_at=now)


def _publish_in_request(item: dict, request_id: str | None) -> None:
    token = logs.request_id.set(request_id)  # what project/asgi_stack/request_id.py binds for a request
    try:
        publish_item(item)
    finally:
        logs.request_id.reset(token)


@pytest.fixture
def json_log():
    """The records of the consumer's logger, formatted as production's stderr handler does (LOG_FORMAT=json)."""
    with json_log_of("app.messaging.consumer") as stream:
        yield stream


def _consume_all(connection, channel) -> ItemsBatchConsumer:
    step = ItemsBatchConsumer(parent=None)
    (kombu_consumer,) = step.get_consumers(channel)
    kombu_consumer.consume()
    while True:
        try:
            connection.drain_events(timeout=0.2)
        except TimeoutError:
            return step


def _queued(channel) -> Message:
    message = items_queue()(channel).get(accept=["json"])
    assert message is not None, "nothing was published"
    return message


def test_a_publish_carries_the_request_id_as_a_message_header(broker):
    _, channel = broker
    _publish_in_request(_item(), "abc123")

    message = _queued(channel)
    assert message.headers[messages.REQUEST_ID_HEADER] == "abc123"
    assert message.headers["task"] == messages.TASK_NAME  # Celery's own headers are still there


def test_a_publish_outside_any_request_carries_no_request_id(broker):
    _, channel = broker
    _publish_in_request(_item(), None)
    message = _queued(channel)
    assert messages.REQUEST_ID_HEADER not in message.headers


def test_the_consumer_logs_each_stored_item_with_its_request_id_and_stores_the_batch_with_one_insert(broker, json_log):
    connection, channel = broker
    sent = [(_item(), f"rid-{n}") for n in range(3)]
    for item, request_id in sent:
        _publish_in_request(item, request_id)
    _publish_in_request(unlogged := _item(), None)

    step = _consume_all(connection, channel)
    with CaptureQueriesContext(db_connection) as queries:
        step.flush()

    assert len([q for q in queries.captured_queries if q["sql"].startswith("INSERT")]) == 1
    assert Item.objects.count() == 4
    stored = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert [(r["message"], r["item_id"], r.get("request_id")) for r in stored] == [
        *[("item stored", item["id"], request_id) for item, request_id in sent],
        ("item stored", unlogged["id"], None),
    ]


def test_an_insane_request_id_header_is_not_logged(broker, json_log):
    connection, channel = broker
    Producer(channel).publish(
        messages.task_body([item := _item()]),
        exchange=items_queue().exchange,
        routing_key="items",
        serializer="json",
        headers={messages.REQUEST_ID_HEADER: "forged\nline"},
    )
    _consume_all(connection, channel).flush()
    (record,) = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert record["item_id"] == item["id"] and "request_id" not in record


# --- tracing (OTEL_EXPORTER_OTLP_ENDPOINT set; `spans`: the SDK with an in-memory exporter, tests/unit/conftest.py)


def test_with_tracing_a_publish_carries_a_traceparent_and_the_worker_continues_its_trace(broker, spans):
    connection, channel = broker
    item = _item()
    _publish_in_request(item, "traced-1")

    message = _queued(channel)
    traceparent = message.headers[messages.TRACEPARENT_HEADER]
    (publish,) = spans.get_finished_spans()
    assert publish.name == f"publish {messages.TASK_NAME}"
    assert traceparent.split("-")[1] == f"{publish.context.trace_id:032x}"
    assert message.headers[messages.REQUEST_ID_HEADER] == "traced-1"  # both travel together

    message.requeue()
    spans.clear()
    _consume_all(connection, channel).flush()

    by_name = {span.name: span for span in spans.get_finished_spans()}
    stored, batch = by_name[f"store {messages.TASK_NAME}"], by_name["store batch"]
    assert stored.context.trace_id == publish.context.trace_id  # the request's trace, continued in the worker
    assert stored.parent is not None and stored.parent.span_id == publish.context.span_id
    assert [link.context.span_id for link in batch.links] == [stored.context.span_id]
    assert Item.objects.filter(id=item["id"]).exists()
