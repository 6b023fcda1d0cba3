"""The worker's consumer step: one INSERT per batch; a message that can never be stored is dead-lettered with
why, the rest of its batch stored; after a commit the cache version is bumped even through a Redis blip, and
while Redis stays down the batch is still acked and the bump is paid later."""

import datetime as dt
import uuid
from typing import cast

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from kombu import Message, Producer
from prometheus_client import REGISTRY

from app import cache
from app.messaging import consumer as consumer_module
from app.messaging import messages
from app.messaging.consumer import ItemsBatchConsumer
from app.models import Item

pytestmark = pytest.mark.django_db


class FlakyRedis:
    """A Redis whose INCR fails while `down` > 0 (each failure uses one up), then counts; `log` records each
    INCR try and each ack of the consumer, in order."""

    def __init__(self, log: list[str]) -> None:
        self.down, self.version, self.log = 0, 0, log

    def incr(self, key: str) -> int:
        assert key == cache.VERSION_KEY
        self.log.append("incr")
        if self.down:
            self.down -= 1
            raise redis.ConnectionError("Connection refused")
        self.version += 1
        return self.version


class FakeMessage:
    def __init__(self, log: list[str]) -> None:
        self.log, self.acked = log, False
        self.headers: dict = {}

    def ack(self) -> None:
        self.log.append("ack")
        self.acked = True


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def flaky(settings, monkeypatch, log) -> FlakyRedis:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # only enables the cache: every call goes to FlakyRedis
    settings.RESPONSE_CACHE_ENABLED = True
    fake = FlakyRedis(log)
    monkeypatch.setattr(cache, "_redis", lambda: fake)
    monkeypatch.setattr(cache, "_bump", cache._VersionBump())
    monkeypatch.setattr(cache.time, "sleep", lambda s: log.append(f"sleep {s:g}"))
    return fake


def _failures() -> float:
    return REGISTRY.get_sample_value("items_cache_version_bump_failures_total") or 0.0


def _owed() -> float:
    owed = REGISTRY.get_sample_value("items_cache_version_bump_owed")
    assert owed is not None, "items_cache_version_bump_owed is not exported"
    return owed


def _flush_one_batch(log: list[str], size: int = 3) -> list[FakeMessage]:
    consumer = ItemsBatchConsumer(parent=None)
    delivered = [FakeMessage(log) for _ in range(size)]
    for message in delivered:
        payload = {
            "id": str(uuid.uuid4()),
            "name": "n",
            "description": "",
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        consumer.on_message(messages.task_body([payload]), cast(Message, message))  # a stand-in for kombu's
    consumer.flush()
    return delivered


def test_a_redis_blip_during_the_bump_is_retried_with_backoff_before_the_batch_is_acked(flaky, log):
    flaky.down = 2
    failures = _failures()

    delivered = _flush_one_batch(log)

    assert Item.objects.count() == 3
    assert flaky.version == 1  # cached pages are stale now, not in RESPONSE_CACHE_TTL_S
    assert log == ["incr", "sleep 0.05", "incr", "sleep 0.1", "incr", "ack", "ack", "ack"]
    assert all(message.acked for message in delivered)
    assert _failures() == failures + 2
    assert _owed() == 0


def test_with_redis_down_the_batch_is_acked_and_the_bump_is_paid_once_redis_answers(flaky, log, monkeypatch):
    flaky.down = 1000
    failures = _failures()

    delivered = _flush_one_batch(log)

    assert all(message.acked for message in delivered)  # a cache outage must not stall the write path
    assert flaky.version == 0
    assert _owed() == 1
    assert _failures() == failures + cache.BUMP_ATTEMPTS

    # While it is owed, a tick tries at most every OWED_RETRY_INTERVAL_S, and a batch tries once, no backoff.
    log.clear()
    cache.settle_version()
    assert log == []
    _flush_one_batch(log)
    assert log == ["incr", "ack", "ack", "ack"]

    flaky.down = 0  # Redis is back
    monkeypatch.setattr(cache, "OWED_RETRY_INTERVAL_S", 0.0)
    cache._bump.next_try_at = 0.0
    consumer = ItemsBatchConsumer(parent=None)
    consumer.tick()  # the worker's 50 ms flush tick, with nothing to flush
    assert flaky.version == 1
    assert _owed() == 0
    consumer.tick()
    assert flaky.version == 1  # paid once


def test_a_starting_worker_bumps_the_version_on_its_first_tick(flaky, log, monkeypatch):
    """Its predecessor may have died after a commit while it owed the bump."""
    monkeypatch.setattr("celery.bootsteps.ConsumerStep.start", lambda self, c: None)

    class Timer:
        def call_repeatedly(self, interval_s, tick):
            self.tick = tick

    class Parent:
        timer = Timer()

    consumer = ItemsBatchConsumer(parent=None)
    consumer.start(Parent())
    assert flaky.version == 0
    Parent.timer.tick()
    assert flaky.version == 1


def test_without_the_response_cache_nothing_is_bumped(settings):
    settings.REDIS_URL = ""
    assert cache.bump_version() is True
    cache.owe_version_bump()
    cache.settle_version()


# --- batching and the dead-letter path ----------------------------------------------------------------------


class RecordedMessage(FakeMessage):
    """A delivered message as kombu hands it to the consumer: body, headers and content type included."""

    def __init__(self, log: list[str], body: list) -> None:
        super().__init__(log)
        self.body, self.headers = body, {"id": "task-id"}
        self.content_type, self.content_encoding = "application/json", "utf-8"


class RecordingProducer:
    def __init__(self) -> None:
        self.published: list[dict] = []

    def publish(self, body, **options) -> None:
        self.published.append({"body": body, **options})


def _item(**overrides) -> dict:
    item = messages.item_payload(
        item_id=str(uuid.uuid4()), name="n", description="", created_at=dt.datetime.now(dt.UTC).isoformat()
    )
    return {**item, **overrides}


@pytest.fixture
def consumer(monkeypatch) -> ItemsBatchConsumer:
    monkeypatch.setattr(consumer_module.time, "sleep", lambda s: None)  # the retry backoff
    step = ItemsBatchConsumer(parent=None)
    step.dead_letter_producer = cast(Producer, RecordingProducer())  # a stand-in for kombu's
    return step


def test_a_whole_batch_is_stored_with_one_insert(consumer, log):
    batch = [RecordedMessage(log, messages.task_body([_item()])) for _ in range(50)]
    for message in batch:
        consumer.on_message(message.body, message)
    with CaptureQueriesContext(connection) as queries:
        consumer.flush()
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    assert Item.objects.count() == 50
    assert all(message.acked for message in batch)


def test_a_message_that_can_never_be_stored_is_dead_lettered_with_why_and_the_rest_of_its_batch_is_stored(
    consumer, log
):
    good = [RecordedMessage(log, messages.task_body([_item()])) for _ in range(3)]
    poison = RecordedMessage(log, messages.task_body([_item(created_at="not a time")]))
    for message in [good[0], poison, *good[1:]]:
        consumer.on_message(message.body, message)
    consumer.flush()

    assert Item.objects.count() == 3
    assert all(message.acked for message in [*good, poison])
    (dead,) = consumer.dead_letter_producer.published
    assert dead["body"] == poison.body and dead["delivery_mode"] == 2
    assert dead["headers"][messages.REASON_HEADER] == "unstorable"
    assert dead["headers"][messages.ATTEMPTS_HEADER] == consumer_module.MAX_ATTEMPTS
    assert dead["headers"][messages.ERROR_HEADER].startswith("ValueError: ")
    assert dead["headers"]["id"] == "task-id"  # the original headers are kept for the replay


def test_in_a_message_of_several_posts_only_the_item_that_cannot_be_stored_is_dead_lettered_with_its_request_id(
    consumer, log
):
    good, poison = [_item(), _item()], _item(created_at="not a time")
    message = RecordedMessage(log, messages.task_body([good[0], poison, good[1]]))
    message.headers = {
        "id": "task-id",
        "argsrepr": "[[all three]]",
        **messages.request_id_headers(["rid-a", "rid-b", None]),
    }
    consumer.on_message(message.body, message)
    consumer.flush()

    assert set(Item.objects.values_list("id", flat=True)) == {uuid.UUID(item["id"]) for item in good}
    assert message.acked
    (dead,) = consumer.dead_letter_producer.published
    assert messages.items_of(dead["body"]) == [poison]  # replaying it stores the poison alone, not the rest again
    assert messages.request_ids_of(dead["headers"], 1) == ["rid-b"]
    assert dead["headers"][messages.REASON_HEADER] == "unstorable" and dead["headers"]["id"] == "task-id"
    assert "argsrepr" not in dead["headers"]  # it named the stored items too


def test_a_batch_is_flushed_at_batch_max_items_whatever_the_number_of_messages(consumer, log, monkeypatch):
    monkeypatch.setattr(consumer_module, "BATCH_MAX", 10)
    delivered = [RecordedMessage(log, messages.task_body([_item() for _ in range(4)])) for _ in range(3)]
    for message in delivered[:2]:
        consumer.on_message(message.body, message)
    assert Item.objects.count() == 0  # 8 items: not yet
    consumer.on_message(delivered[2].body, delivered[2])
    assert Item.objects.count() == 12 and all(message.acked for message in delivered)


def test_a_body_that_is_not_an_items_message_is_dead_lettered_at_once_as_malformed(consumer, log):
    message = RecordedMessage(log, [{"not": "a task"}])
    consumer.on_message(message.body, message)
    (dead,) = consumer.dead_letter_producer.published
    assert dead["headers"][messages.REASON_HEADER] == "malformed"
    assert message.acked and consumer.buffer == []


def test_a_body_that_is_not_even_json_is_dead_lettered_instead_of_stopping_the_worker():
    # kombu's in-memory transport: real declare, publish, delivery and decoding, no broker.
    from kombu import Connection
    from kombu import Producer as KombuProducer

    from app.messaging.queues import dead_letter_queue, items_queue

    with Connection("memory://") as connection:
        channel = connection.channel()
        step = ItemsBatchConsumer(parent=None)
        (kombu_consumer,) = step.get_consumers(channel)
        items_queue()(channel).declare()
        KombuProducer(channel).publish(
            b"\xff not json", exchange=items_queue().exchange, routing_key="items", content_type="application/json"
        )
        kombu_consumer.consume()
        connection.drain_events(timeout=2)  # raised DecodeError out of the worker before on_decode_error

        dead = dead_letter_queue(channel).get(accept=["application/octet-stream", "json"])
        assert dead is not None
        assert dead.headers[messages.REASON_HEADER] == "malformed"
        assert dead.body == b"\xff not json"
        assert step.buffer == []
