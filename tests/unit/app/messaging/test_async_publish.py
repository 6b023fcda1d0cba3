"""The write path's publisher sends the very Celery task message the kombu path sends (the worker cannot tell
them apart); its behaviour against a real RabbitMQ is in tests/integration (test_write_path_*)."""

import asyncio
import json
import uuid
from typing import Any, cast

import aiormq
from pamqp.commands import Basic

from app.exceptions import PublishUnconfirmed, QueueFull
from app.messaging import messages
from app.messaging.async_publish import PERSISTENT, AsyncPublisher, _task_message


def test_the_message_is_an_items_store_task_the_consumer_reads_with_our_headers():
    task_id = str(uuid.uuid4())
    payload = messages.item_payload(item_id=str(uuid.uuid4()), name="lamp", description="é", created_at="2026Z")
    body, properties = _task_message(task_id, [payload], {messages.REQUEST_ID_HEADER: "rid-1"})

    assert messages.items_of(json.loads(body)) == [payload]
    assert json.loads(body) == messages.task_body([payload])
    headers = properties.headers or {}
    assert (headers["task"], headers["id"], headers["root_id"]) == (messages.TASK_NAME, task_id, task_id)
    assert messages.request_ids_of(headers, 1) == ["rid-1"]
    assert payload["id"] in str(headers["argsrepr"])
    assert (properties.content_type, properties.content_encoding) == ("application/json", "utf-8")
    assert properties.delivery_mode == PERSISTENT
    # correlation_id is what kombu's path sets too; message_id lets aiormq match a returned message to its confirm
    assert properties.correlation_id == properties.message_id == task_id


# --- group commit: the POSTs of one event-loop turn share a message (against a stand-in channel; the real
# broker's confirms, nacks and returns are in tests/integration/test_write_path_*)


class RecordingChannel:
    """What the publisher uses of aiormq's channel: basic_publish, answered with `outcome` after a loop turn."""

    is_closed = False

    def __init__(self, outcome: BaseException | None = None) -> None:
        self.outcome = outcome
        self.published: list[tuple[list, dict]] = []

    async def basic_publish(self, body, *, properties, **_):
        self.published.append((json.loads(body), dict(properties.headers or {})))
        await asyncio.sleep(0)
        if self.outcome is not None:
            raise self.outcome


def _publisher(channel: RecordingChannel, batch_max: int = 64) -> AsyncPublisher:
    publisher = AsyncPublisher(
        "amqp://unused", connect_timeout_s=1, confirm_timeout_s=1, max_in_flight=1000, batch_max=batch_max
    )
    publisher._channel = cast(Any, channel)
    return publisher


def _payload(n: int) -> dict:
    return messages.item_payload(item_id=str(uuid.uuid4()), name=f"item {n}", description="", created_at="2026Z")


def test_the_posts_of_one_loop_turn_share_one_message_their_request_ids_in_item_order():
    channel = RecordingChannel()
    payloads = [_payload(n) for n in range(5)]

    async def main():
        publisher = _publisher(channel)
        await asyncio.gather(
            *(publisher.publish(p, request_id=f"rid-{n}" if n != 2 else None) for n, p in enumerate(payloads))
        )

    asyncio.run(main())
    ((body, headers),) = channel.published
    assert messages.items_of(body) == payloads
    assert messages.request_ids_of(headers, 5) == ["rid-0", "rid-1", None, "rid-3", "rid-4"]
    assert messages.REQUEST_ID_HEADER not in headers  # one request id would be a lie for a message of five


def test_a_batch_is_at_most_batch_max_items_and_a_lone_post_is_a_message_as_the_django_path_sends():
    channel = RecordingChannel()

    async def main():
        publisher = _publisher(channel, batch_max=4)
        await asyncio.gather(*(publisher.publish(_payload(n), request_id="r") for n in range(10)))
        await publisher.publish(_payload(10), request_id="lone")

    asyncio.run(main())
    assert [len(messages.items_of(body)) for body, _ in channel.published] == [4, 4, 2, 1]
    assert channel.published[-1][1][messages.REQUEST_ID_HEADER] == "lone"


def test_a_refused_batch_fails_every_post_in_it_and_the_next_turn_starts_a_new_one():
    channel = RecordingChannel(outcome=aiormq.exceptions.DeliveryError(None, Basic.Nack()))  # the queue is full

    async def main():
        publisher = _publisher(channel)
        refused = await asyncio.gather(
            *(publisher.publish(_payload(n), request_id=None) for n in range(3)), return_exceptions=True
        )
        channel.outcome = None
        await publisher.publish(_payload(3), request_id=None)
        return refused, publisher.in_flight

    refused, in_flight = asyncio.run(main())
    assert [type(r) for r in refused] == [QueueFull] * 3
    assert [len(messages.items_of(body)) for body, _ in channel.published] == [3, 1]
    assert in_flight == 0


def test_a_post_cancelled_before_its_batch_leaves_is_not_sent():
    channel = RecordingChannel()
    kept, dropped = _payload(0), _payload(1)

    async def main():
        publisher = _publisher(channel)
        first = asyncio.ensure_future(publisher.publish(kept, request_id=None))
        second = asyncio.ensure_future(publisher.publish(dropped, request_id=None))
        await asyncio.sleep(0)  # both are waiting in the batch, which has not left yet
        second.cancel()
        await first
        return second.cancelled()

    assert asyncio.run(main())
    ((body, _),) = channel.published
    assert messages.items_of(body) == [kept]


def test_with_tracing_a_batch_has_a_producer_span_under_a_posts_publish_linked_to_the_others_and_carried_on(spans):
    channel = RecordingChannel()

    async def main():
        publisher = _publisher(channel)
        await asyncio.gather(*(publisher.publish(_payload(n), request_id=None) for n in range(3)))

    asyncio.run(main())
    ((_, headers),) = channel.published
    finished = spans.get_finished_spans()
    (batch,) = [s for s in finished if s.attributes.get("items.batch_items") == 3]
    posts = [s for s in finished if "items.item_id" in s.attributes]
    assert len(posts) == 3
    # The child of one POST's publish, so sampled with it (parent-based sampling), and linked to the other two.
    assert batch.parent.span_id == posts[0].context.span_id and batch.context.trace_id == posts[0].context.trace_id
    assert {link.context.span_id for link in batch.links} == {s.context.span_id for s in posts[1:]}
    assert headers[messages.TRACEPARENT_HEADER].split("-")[2] == f"{batch.context.span_id:016x}"


def test_each_post_of_a_refused_batch_raises_its_own_error():
    channel = RecordingChannel(outcome=aiormq.exceptions.DeliveryError(None, Basic.Nack()))

    async def main():
        publisher = _publisher(channel)
        return await asyncio.gather(
            *(publisher.publish(_payload(n), request_id=None) for n in range(3)), return_exceptions=True
        )

    errors = asyncio.run(main())
    assert [type(e) for e in errors] == [QueueFull] * 3
    assert len({id(e) for e in errors}) == 3  # one instance per task: a shared one would carry their tracebacks


def test_a_batch_cut_off_by_the_loop_closing_answers_its_posts_unconfirmed():
    class HangingChannel(RecordingChannel):
        async def basic_publish(self, body, *, properties, **_):
            await asyncio.Event().wait()

    async def main():
        publisher = _publisher(HangingChannel())
        posts = [asyncio.ensure_future(publisher.publish(_payload(n), request_id=None)) for n in range(2)]
        await asyncio.sleep(0.01)  # the batch is out, waiting for its confirm
        for task in publisher._sending:
            task.cancel()
        return await asyncio.gather(*posts, return_exceptions=True)

    assert [type(e) for e in asyncio.run(main())] == [PublishUnconfirmed] * 2
