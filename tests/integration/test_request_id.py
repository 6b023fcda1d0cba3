"""One request followed by its id on the real stack: a client's X-Request-ID goes through Nginx to gunicorn, comes
back on the response, is in gunicorn's JSON access record, travels in the message to the Celery worker, and is in
the worker's JSON `item stored` line for that item."""

import contextlib
import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until

pytestmark = pytest.mark.integration


def json_records(log: Path) -> list[dict]:
    """The JSON lines of a component's log (the supervisor's markers, banners and tracebacks are not)."""
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):  # a line that only starts like JSON
                records.append(json.loads(line))
    return records


def test_a_client_request_id_is_returned_and_followed_from_nginx_to_the_stored_row(stack):
    request_id = f"abc123-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        accepted = client.post("/items", json={"name": "followed"}, headers={"X-Request-ID": request_id})
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["X-Request-ID"] == request_id
    item_id = accepted.json()["id"]

    logs = stack.stack_dir / "log"
    access = wait_until(
        lambda: [r for r in json_records(logs / "gunicorn.log") if r.get("request_id") == request_id],
        timeout_s=10,
    )
    assert {(r["logger"], r["method"], r["path"], r["status"]) for r in access} == {
        ("items.access", "POST", "/items", 202)
    }

    stored = wait_until(
        lambda: [r for r in json_records(logs / "celery.log") if r.get("item_id") == item_id],
        timeout_s=20,
    )
    assert [(r["message"], r["request_id"]) for r in stored] == [("item stored", request_id)]
    assert stack.psql(f"SELECT name FROM items WHERE id = '{item_id}'") == [("followed",)]


def test_without_a_client_id_nginx_makes_one_and_every_answer_carries_it(stack):
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        served = client.get("/items?limit=1")
        cached = client.get("/items?limit=1")  # possibly from the micro-cache: its own id all the same
        refused = client.get("/items", headers={"X-Request-ID": "bad\tid"})
        not_proxied = client.request("PROPFIND", "/items")  # Nginx's own 405
    ids = [r.headers["X-Request-ID"] for r in (served, cached, refused, not_proxied)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 4
    assert [len(r.headers.get_list("X-Request-ID")) for r in (served, cached)] == [1, 1]


def test_the_worker_and_gunicorn_write_json_lines_only(stack):
    """Apart from the supervisor's start markers and Celery's start-up banner (printed, not logged)."""
    logs = stack.stack_dir / "log"
    for name in ("gunicorn", "celery"):
        lines = (logs / f"{name}.log").read_text(errors="replace").splitlines()
        records = json_records(logs / f"{name}.log")
        assert records, f"no JSON line in {name}.log"
        levels = {r["level"] for r in records}
        assert levels <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        if name == "gunicorn":
            assert any(r["logger"] == "gunicorn.error" for r in records)  # gunicorn's own "Booting worker"
            assert not any("color_message" in r for r in records)
            stray = [line for line in lines if line.strip() and not line.startswith(("{", "=== deploy.stack"))]
            assert not stray, stray[:5]
        else:
            assert any(r["message"].endswith(" ready.") for r in records)  # the line deploy.stack waits for
