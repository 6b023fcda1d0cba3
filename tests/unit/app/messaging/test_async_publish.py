"""The write path's publisher sends the very Celery task message the kombu path sends (the worker cannot tell
them apart); its behaviour against a real RabbitMQ is in tests/integration (test_write_path_*)."""

import json
import uuid

from app.messaging import messages
from app.messaging.async_publish import PERSISTENT, _task_message


def test_the_message_is_an_items_store_task_the_consumer_reads_with_our_headers():
    task_id = str(uuid.uuid4())
    payload = messages.item_payload(item_id=str(uuid.uuid4()), name="lamp", description="é", created_at="2026Z")
    body, properties = _task_message(task_id, payload, {messages.REQUEST_ID_HEADER: "rid-1"})

    assert messages.items_of(json.loads(body)) == [payload]
    assert json.loads(body) == messages.task_body([payload])
    headers = properties.headers or {}
    assert (headers["task"], headers["id"], headers["root_id"]) == (messages.TASK_NAME, task_id, task_id)
    assert messages.request_id_of(headers) == "rid-1"
    assert payload["id"] in str(headers["argsrepr"])
    assert (properties.content_type, properties.content_encoding) == ("application/json", "utf-8")
    assert properties.delivery_mode == PERSISTENT
    # correlation_id is what kombu's path sets too; message_id lets aiormq match a returned message to its confirm
    assert properties.correlation_id == properties.message_id == task_id
