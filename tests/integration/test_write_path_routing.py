"""A 202 is never a message nobody routes. Unbinding the `items` queue out of band (or deleting it) must not turn
accepted POSTs into confirmed-and-dropped messages: each publish declares and binds the queue again, and is
mandatory besides, so an unrouted one would come back as a 503 (app/messaging/publish.py)."""

import time
from typing import Any

import httpx
import pytest
from kombu import Connection

pytestmark = pytest.mark.integration


def test_after_the_queue_is_unbound_every_accepted_post_is_still_stored(stack):
    for _ in range(10):  # both web workers have published: whatever they remember of the topology
        assert httpx.post(f"{stack.base_url}/items", json={"name": "routing warm-up"}, timeout=15).status_code == 202
    with Connection(stack.env["BROKER_URL"]) as broker:
        channel: Any = broker.channel()  # kombu's stubs lack most of a channel's methods
        channel.queue_unbind(queue="items", exchange="items", routing_key="items")
        channel.close()
    answers = [httpx.post(f"{stack.base_url}/items", json={"name": "after-unbind"}, timeout=15) for _ in range(10)]
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    assert all(a.status_code in (202, 503) for a in answers), [a.text for a in answers]
    assert all(a.json()["error"] == "broker_unavailable" for a in answers if a.status_code == 503)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = {row[0] for row in stack.psql("SELECT id FROM items WHERE name = 'after-unbind'")}
        if stored >= accepted:
            break
        time.sleep(0.5)
    assert stored == accepted, "a 202 was answered for a message that was never stored"
