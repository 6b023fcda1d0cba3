"""Retries after a failed publish: an Idempotency-Key stays bound to its item while the item may be queued.

Faults are injected at the publish boundary (the Celery task's apply_async, which runs the task in-process on
the embedded default): "stored, then no confirm" is the broker keeping a message whose confirm was lost.
"""

import threading
import time

import pytest
from amqp.exceptions import MessageNacked
from kombu.exceptions import OperationalError

from app import services
from app.exceptions import PublishUnconfirmed
from app.idempotency import _lock_key, idempotency_claim
from app.ids import uuid7
from app.messaging.publish import nothing_sent
from app.models import Item
from app.tasks import items_store_task
from tests.support import assert_envelope

pytestmark = pytest.mark.django_db

BODY = {"name": "retried", "description": "once"}


def _wrapped(cause: BaseException) -> OperationalError:
    """A failure as kombu raises it: its OperationalError, caused by the socket-level error."""
    try:
        raise OperationalError(str(cause)) from cause
    except OperationalError as exc:
        return exc


def confirm_timeout() -> OperationalError:
    return _wrapped(TimeoutError("timed out"))


def connection_refused() -> OperationalError:
    return _wrapped(ConnectionRefusedError(111, "Connection refused"))


@pytest.fixture
def broker(monkeypatch):
    """apply_async with scripted faults: each entry of `faults` is used by one publish, in order —
    ("lost", exc): the broker kept the message (it is stored) but the API gets exc; ("refused", exc): nothing
    reached the broker. Publishes beyond the script succeed. `published` holds every payload that reached it."""
    real = items_store_task.apply_async

    class Broker:
        faults: list[tuple[str, BaseException]] = []
        published: list[dict] = []
        calls = 0

        def apply_async(self, *args, **kwargs):
            self.calls += 1
            kind, exc = self.faults.pop(0) if self.faults else ("ok", None)
            if kind in ("ok", "lost"):
                self.published.append(kwargs["args"][0][0])
                real(*args, **kwargs)
            if exc is not None:
                raise exc

    fake = Broker()
    fake.faults, fake.published = [], []
    monkeypatch.setattr(items_store_task, "apply_async", fake.apply_async)
    return fake


def test_a_retry_after_an_unconfirmed_publish_gets_the_same_202_and_the_item_is_stored_once(post_item, broker):
    broker.faults = [("lost", confirm_timeout())]
    first = post_item(BODY, **{"Idempotency-Key": "k"})
    assert_envelope(first, 503, "broker_unavailable")
    assert first["Retry-After"]
    assert Item.objects.count() == 1  # the broker had it all along

    retry = post_item(BODY, **{"Idempotency-Key": "k"})
    assert retry.status_code == 202
    assert Item.objects.count() == 1
    assert retry.json() == {"id": str(Item.objects.get().id), "status": "accepted"}
    assert broker.published[0] == broker.published[1]  # same id, same payload, same created_at

    replay = post_item(BODY, **{"Idempotency-Key": "k"})
    assert replay.content == retry.content and replay["Location"] == retry["Location"]
    assert broker.calls == 2  # a replay of an accepted key publishes nothing


def test_a_retry_after_an_unconfirmed_publish_that_was_lost_stores_the_item_once(post_item, broker):
    broker.faults = [("refused", confirm_timeout())]  # e.g. the broker died before storing it
    assert_envelope(post_item(BODY, **{"Idempotency-Key": "k"}), 503, "broker_unavailable")
    retry = post_item(BODY, **{"Idempotency-Key": "k"})
    assert retry.status_code == 202
    assert list(Item.objects.values_list("id", flat=True)) == [services.uuid.UUID(retry.json()["id"])]


def test_a_key_stays_bound_to_its_body_after_an_unconfirmed_publish(post_item, broker):
    broker.faults = [("lost", confirm_timeout())]
    post_item(BODY, **{"Idempotency-Key": "k"})
    assert_envelope(post_item({"name": "another"}, **{"Idempotency-Key": "k"}), 422, "idempotency_conflict")


@pytest.mark.parametrize(
    ("fault", "code"),
    [(connection_refused, "broker_unavailable"), (MessageNacked, "queue_full")],
    ids=["connection-refused", "nacked"],
)
def test_a_publish_that_provably_sent_nothing_frees_the_key(post_item, broker, fault, code):
    broker.faults = [("refused", fault())]
    assert_envelope(post_item(BODY, **{"Idempotency-Key": "k"}), 503, code)
    assert Item.objects.count() == 0
    # Freed: the key may even be used for another body now.
    assert post_item({"name": "another"}, **{"Idempotency-Key": "k"}).status_code == 202


def test_a_definite_failure_after_an_unconfirmed_one_keeps_the_key_bound(post_item, broker):
    broker.faults = [("lost", confirm_timeout()), ("refused", MessageNacked()), ("refused", connection_refused())]
    assert_envelope(post_item(BODY, **{"Idempotency-Key": "k"}), 503, "broker_unavailable")
    assert_envelope(post_item(BODY, **{"Idempotency-Key": "k"}), 503, "queue_full")
    assert_envelope(post_item(BODY, **{"Idempotency-Key": "k"}), 503, "broker_unavailable")
    retry = post_item(BODY, **{"Idempotency-Key": "k"})
    assert retry.status_code == 202
    assert Item.objects.count() == 1
    assert retry.json()["id"] == str(Item.objects.get().id)


def test_a_nack_after_a_retried_confirm_timeout_is_unconfirmed(post_item, broker, monkeypatch):
    """Within one request, kombu may retry a timed-out publish on a new connection: if that one is nacked, the
    first may still be in the queue."""

    def apply_async(*args, retry_policy, **kwargs):
        retry_policy["errback"](TimeoutError("timed out"), 0)
        raise MessageNacked()

    monkeypatch.setattr(items_store_task, "apply_async", apply_async)
    assert_envelope(post_item(BODY, **{"Idempotency-Key": "k"}), 503, "broker_unavailable")
    assert_envelope(post_item({"name": "another"}, **{"Idempotency-Key": "k"}), 422, "idempotency_conflict")


def test_a_retry_whose_owner_died_before_its_confirm_republishes_the_same_id(post_item, broker):
    # A request claimed the key and died (its process killed) before the outcome: its lock expires.
    from django.core.cache import caches

    claim = idempotency_claim(key="k", fingerprint=services.body_fingerprint(BODY), item_id=uuid7(1))
    caches["state"].delete(_lock_key("k"))
    retry = post_item(BODY, **{"Idempotency-Key": "k"})
    assert retry.status_code == 202
    assert retry.json()["id"] == str(claim.item_id)


def test_concurrent_retries_publish_once_and_all_get_the_same_id(monkeypatch):
    """After an unconfirmed attempt, one retry republishes while the others wait for its confirm."""
    calls = []

    def slow_publish(payload):
        calls.append(payload)
        if len(calls) == 1:
            raise PublishUnconfirmed()
        time.sleep(0.2)

    monkeypatch.setattr(services, "publish_item", slow_publish)
    with pytest.raises(PublishUnconfirmed):
        services.item_accept(**BODY, idempotency_key="k")

    ids = []
    threads = [
        threading.Thread(target=lambda: ids.append(services.item_accept(**BODY, idempotency_key="k"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == 8 and set(ids) == {services.uuid.UUID(calls[0]["id"])}
    assert len(calls) == 2 and calls[0] == calls[1]


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        ([connection_refused()], True),
        ([MessageNacked()], True),
        ([confirm_timeout()], False),
        ([TimeoutError("timed out")], False),  # socket.timeout, as py-amqp raises it
        ([_wrapped(ConnectionResetError(104, "reset"))], False),
        ([_wrapped(BrokenPipeError(32, "broken pipe"))], False),
        ([TimeoutError("timed out"), MessageNacked()], False),  # retried after a timeout, then nacked
        ([ConnectionRefusedError(111, "refused"), connection_refused()], True),
        ([OperationalError("no cause")], False),
    ],
)
def test_only_a_refused_connection_or_a_nack_proves_nothing_was_sent(failures, expected):
    assert nothing_sent(failures) is expected


def test_an_unforeseen_publish_failure_keeps_the_key_bound(monkeypatch):
    calls = []

    def publish(payload):
        calls.append(payload)
        if len(calls) == 1:
            raise RuntimeError("a bug after the frames went out")

    monkeypatch.setattr(services, "publish_item", publish)
    with pytest.raises(RuntimeError):
        services.item_accept(**BODY, idempotency_key="k")
    assert services.item_accept(**BODY, idempotency_key="k") == services.uuid.UUID(calls[0]["id"])
    assert calls[0] == calls[1]
