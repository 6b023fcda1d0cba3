"""A client retry after an ambiguous publish stores the item once (docs/architecture.md, guarantees: "No duplicate").

The ambiguous case: RabbitMQ took the message but its confirm never reached the API in time (here the `items`
queue's Raft leader is suspended, then resumed: it stores the message after the API gave up), so the client got a
503 although the item will be stored. A retry with the same Idempotency-Key must then get the same id, so that the
consumer's ON CONFLICT (id) DO NOTHING stores one row.
"""

import subprocess
import threading
import time
import uuid

import httpx
import pytest

from tests.support import wait_until

pytestmark = pytest.mark.integration

# Few: each holds one of its worker's running slots through the 2 s publish timeout, and the load shedder runs
# only a few per worker (SHED_LIMIT_MIN 4 while it measures its baseline). Ten once left the keyed POST queued
# behind them past its budget, shed as 503 overloaded instead of reaching its publish.
SACRIFICES = 2
SUSPENDED_S = 8.0  # > PUBLISH_CONFIRM_TIMEOUT_S (2 s): the first attempt gives up before the queue resumes


def _suspend_items_queue_leader(stack, seconds: float) -> None:
    """Suspend the Erlang process of the `items` quorum queue's leader for `seconds`: publishes reach the broker
    but are neither stored nor confirmed until it resumes (a suspension lasts only while its suspender lives,
    hence the process that sleeps)."""
    erlang = (
        '{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"items">>)), '
        "{Name, _} = amqqueue:get_pid(Q), Leader = whereis(Name), "
        "spawn(fun() -> true = erlang:suspend_process(Leader), "
        f"timer:sleep({int(seconds * 1000)}), erlang:resume_process(Leader) end)."
    )
    cookie = (stack.stack_dir / "data" / "rabbitmq" / ".erlang.cookie").read_text().strip()
    result = subprocess.run(
        ["rabbitmqctl", "-n", stack.env["RABBITMQ_NODENAME"], "--erlang-cookie", cookie, "eval", erlang],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _rows_for(stack, description: str) -> list[tuple]:
    return stack.psql(f"SELECT id::text FROM items WHERE description = '{description}' ORDER BY id")


def test_a_retry_after_an_unconfirmed_publish_gets_the_same_id_and_stores_the_item_once(stack):
    url = f"{stack.web_url}/items"
    key = f"unconfirmed-{uuid.uuid4()}"
    body = {"name": "unconfirmed-once", "description": key}
    for _ in range(20):  # every web worker has its broker connections and a fresh queue-depth sample
        assert httpx.post(url, json={"name": "unconfirmed-warm-up"}, timeout=30).status_code == 202
    time.sleep(0.3)  # the queue-depth samples go stale, so the next POST in each worker refreshes one

    _suspend_items_queue_leader(stack, SUSPENDED_S)
    resumed_at = time.monotonic() + SUSPENDED_S
    # Each worker's depth sample (app/backpressure.py) asks the queue, so whichever POST refreshes it first
    # waits up to 50 ms for it; these throwaway POSTs take that turn, and the keyed POST goes on to its publish
    # (new connections spread them over both workers).
    sacrifices = [
        threading.Thread(
            target=lambda: httpx.post(url, json={"name": "unconfirmed-sacrifice"}, timeout=60), daemon=True
        )
        for _ in range(SACRIFICES)
    ]
    for thread in sacrifices:
        thread.start()
    time.sleep(0.5)
    first = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=60)
    time.sleep(max(0.0, resumed_at - time.monotonic()))
    for thread in sacrifices:
        thread.join(timeout=60)

    assert first.status_code == 503, first.text
    assert first.json()["error"] == "broker_unavailable"

    def retried() -> httpx.Response | None:
        answer = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30)
        return answer if answer.status_code == 202 else None

    retry = wait_until(retried, timeout_s=60, interval_s=1)
    item_id = retry.json()["id"]
    assert retry.json() == {"id": item_id, "status": "accepted"}
    again = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30)
    assert again.status_code == 202 and again.json() == retry.json()

    wait_until(lambda: _rows_for(stack, key), timeout_s=60)
    time.sleep(3)  # a second row (the first attempt stored under another id) would have arrived by now
    assert _rows_for(stack, key) == [(item_id,)]
