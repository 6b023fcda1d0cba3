"""A POST through Nginx is queued in RabbitMQ, stored by the Celery worker through PgBouncer, and then served."""

import httpx
import pytest

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
