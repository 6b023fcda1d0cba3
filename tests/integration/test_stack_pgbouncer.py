"""PgBouncer is really between the app and PostgreSQL: many API clients, few server connections, all PgBouncer's."""

import asyncio
import datetime as dt
import threading
import time
import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration

POOL_SIZE = 20  # default_pool_size in deploy/pgbouncer/pgbouncer.ini
CLIENTS = 200
REQUESTS_PER_CLIENT = 5

APP_BACKENDS = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


async def many_clients(base_url: str) -> list[str]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one_client(number: int) -> list[str]:
            statuses = []
            for request in range(REQUESTS_PER_CLIENT):
                # Many distinct pages, so the micro-cache does not absorb the load before it reaches the app.
                response = await client.get(f"/items?limit={1 + (number * REQUESTS_PER_CLIENT + request) % 100}")
                error = response.json().get("error", "") if response.status_code >= 400 else ""
                statuses.append(f"{response.status_code} {error}".strip())
            return statuses

        results = await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    return [status for statuses in results for status in statuses]


def test_200_concurrent_clients_get_no_error_and_postgresql_sees_only_pgbouncer_connections(stack):
    pgbouncer_port = int(stack.env["STACK_PGBOUNCER_PORT"])
    backends_per_sample: list[set[str]] = []
    pgbouncer_server_pids: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            backends_per_sample.append({row[0] for row in stack.psql(APP_BACKENDS)})
            # SHOW SERVERS on PgBouncer's console: remote_pid is the PostgreSQL backend of each server connection.
            servers = stack.psql("SHOW SERVERS", port=pgbouncer_port, dbname="pgbouncer")
            pgbouncer_server_pids.update(row[15] for row in servers)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        statuses = asyncio.run(many_clients(stack.base_url))
    finally:
        done.set()
        sampler.join()

    assert len(statuses) == CLIENTS * REQUESTS_PER_CLIENT
    counts = {status: statuses.count(status) for status in set(statuses)}
    # No error. The one refusal allowed is the load shedder's (503 overloaded), which sits at 100 in flight per
    # worker at its floor: 200 clients on 2 workers is exactly that, so an uneven split or a starved machine may
    # shed a few. Bounded, so a real regression still fails.
    assert set(statuses) <= {"200", "503 overloaded"}, counts
    assert counts.get("503 overloaded", 0) <= len(statuses) // 20, counts
    seen = set().union(*backends_per_sample)
    assert seen, "the load never reached PostgreSQL"
    assert max(len(backends) for backends in backends_per_sample) <= POOL_SIZE
    assert seen <= pgbouncer_server_pids, f"backends not opened by PgBouncer: {seen - pgbouncer_server_pids}"


def _pgbouncer_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S %Z").replace(tzinfo=dt.UTC)


def test_the_app_keeps_its_pgbouncer_connection_from_one_request_to_the_next(stack):
    pgbouncer_port = int(stack.env["STACK_PGBOUNCER_PORT"])
    with httpx.Client(base_url=stack.base_url) as client:

        def lookup() -> None:
            # An id nobody asked for: past both caches, a query in PostgreSQL every time.
            assert client.get(f"/items/{uuid.uuid4()}").status_code == 404

        lookup()
        time.sleep(1.1)  # PgBouncer's times are to the second
        started = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for _ in range(10):
            lookup()
    clients = stack.psql("SHOW CLIENTS", port=pgbouncer_port, dbname="pgbouncer")
    # SHOW CLIENTS: database, connect_time, request_time. A connection opened before these requests and used by
    # them is a kept one; with DB_CONN_MAX_AGE_S=0 each request would log in anew and close at its end.
    kept = [
        row
        for row in clients
        if row[2] == stack.env["POSTGRES_DB"] and _pgbouncer_time(row[8]) < started <= _pgbouncer_time(row[9])
    ]
    assert kept, clients
