"""A POST through Nginx is queued in RabbitMQ, stored by the Celery worker through PgBouncer, and then served."""

import json
from collections import Counter

import httpx
import pytest

from tests.integration.load import post_all
from tests.support import wait_until

pytestmark = pytest.mark.integration


def test_a_posted_item_is_stored_by_the_worker_and_becomes_visible_through_the_micro_cache(stack):
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        client.get("/items?limit=100")  # a cached page that must not hide the new item for long
        accepted = client.post("/items", json={"name": "pipeline probe", "description": "through every tier"})
        assert accepted.status_code == 202
        item_id = accepted.json()["id"]

        wait_until(lambda: client.get(f"/items/{item_id}").status_code == 200, timeout_s=20)
        listed = wait_until(
            lambda: item_id in {item["id"] for item in client.get("/items?limit=100").json()["results"]},
            timeout_s=5,
        )

    assert listed
    assert stack.psql(f"SELECT name FROM items WHERE id = '{item_id}'") == [("pipeline probe",)]


def _web_metric(stack, name: str) -> float:
    text = httpx.get(f"{stack.web_url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_posts_arriving_together_share_messages_and_each_is_stored_once_under_its_own_request_id(stack):
    """The write path's group commit: the POSTs of one event-loop turn travel in one message; each item is still
    stored once and logged by the worker with the request id its own POST was answered with."""
    messages_before = _web_metric(stack, "items_publish_batch_items_count")
    items_before = _web_metric(stack, "items_publish_batch_items_sum")
    bodies = [{"name": f"together-{n}", "description": "group commit"} for n in range(600)]
    answers = post_all(f"{stack.base_url}/items", bodies, concurrency=100)
    assert {a.status for a in answers} == {202}, Counter(a.status for a in answers)

    published = _web_metric(stack, "items_publish_batch_items_sum") - items_before
    sent = _web_metric(stack, "items_publish_batch_items_count") - messages_before
    assert published == len(bodies)
    assert sent < published, f"{published:.0f} items in {sent:.0f} messages: no POST shared a message"

    request_of = {(a.body or {})["id"]: a.headers["x-request-id"] for a in answers}

    def stored() -> set[str] | None:
        rows = {row[0] for row in stack.psql("SELECT id::text FROM items WHERE name LIKE 'together-%'")}
        return rows if len(rows) >= len(bodies) else None

    assert wait_until(stored, timeout_s=30) == set(request_of)  # every 202, and nothing else (the id is the key)

    def logged() -> dict[str, str] | None:
        lines = (stack.stack_dir / "log" / "celery.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if '"item stored"' in line]
        found = {r["item_id"]: r.get("request_id") for r in records if r["item_id"] in request_of}
        return found if len(found) == len(request_of) else None

    assert wait_until(logged, timeout_s=10) == request_of
