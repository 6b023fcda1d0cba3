"""The operators' path for real: the compose stack built on this machine, healthy, serving through Nginx.

Run by `make compose-test` (deploy/compose/ci/compose-test.sh), which provides DOCKER_HOST (a private engine)
and the local base images. Every command here is the README's "Docker Compose" section, plus the CI override
file that swaps registry images for ones built from Debian packages. The tests run in file order and share one
stack; the last one takes it down and checks that nothing of it is left.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = "items-compose-test"
FILES = ("docker-compose.yml", "deploy/compose/ci/docker-compose.ci.yml")
ONE_SHOTS = {"secrets", "migrate"}
UP_TIMEOUT_S = 300
T = TypeVar("T")

if not os.environ.get("DOCKER_HOST"):
    pytest.fail("DOCKER_HOST is not set: run these through `make compose-test`", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Compose:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # This client reaches Nginx through Docker's port proxy, from the compose network's gateway address:
        # private, but not fixed. Exempt it from the rate limits (their own tests run on the native stack), or the
        # backup test's 20 POSTs would meet the 5/min POST limit.
        allow = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
        self.env = {**os.environ, "HTTP_PORT": str(self.port), "HTTP_BIND": "127.0.0.1", "RATELIMIT_ALLOWLIST": allow}

    def __call__(self, *args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["docker", "compose", "-p", PROJECT]
        for file in FILES:
            argv += ["-f", file]
        result = subprocess.run(
            [*argv, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and result.returncode != 0:
            logs = subprocess.run(
                [*argv, "logs", "--tail", "40"], cwd=REPO, env=self.env, capture_output=True, text=True, check=False
            )
            detail = f"{result.stderr}\n--- logs ---\n{logs.stdout[-8000:]}"
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{detail}")
        return result

    def psql(self, sql: str) -> str:
        # The backup service has the client and the password (the generated one, from the secrets volume).
        script = 'PGPASSWORD=${PGPASSWORD:-$(cat "$PGPASSWORD_FILE")} psql -XAtq -v ON_ERROR_STOP=1 -c "$0"'
        return self("exec", "-T", "backup", "bash", "-c", script, sql).stdout.strip()

    def services(self) -> list[dict]:
        out = self("ps", "--all", "--format", "json").stdout
        # Compose prints one JSON object per line (2.21+) or one JSON array (older).
        return json.loads(out) if out.lstrip().startswith("[") else [json.loads(line) for line in out.splitlines()]


def wait_until(condition: Callable[[], T | None], timeout_s: float, what: str | Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            what = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout_s} s waiting for {what} (last: {value!r})")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def compose():
    stack = Compose()
    # A clean slate: an earlier run that failed to come up left its containers and network behind.
    stack("down", "--volumes", "--remove-orphans", "--timeout", "60", check=False)
    try:
        stack("up", "--detach", "--build", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout_s=UP_TIMEOUT_S + 600)
        yield stack
    finally:
        stack("down", "--volumes", "--remove-orphans", "--timeout", "60", check=False)


def test_every_service_is_healthy_and_one_shots_succeeded(compose):
    services = compose.services()
    expected = {
        "postgres",
        "postgres-replica",
        "pgbouncer",
        "redis",
        "redis-state",
        "rabbitmq",
        "web",
        "web-read",
        "worker",
        "nginx",
    }
    assert {s["Service"] for s in services} >= expected
    for service in services:
        if service["Service"] in ONE_SHOTS:
            assert service["State"] == "exited" and service["ExitCode"] == 0, service
        else:
            assert service["State"] == "running", service
            assert service["Health"] in ("healthy", ""), service  # "" = no healthcheck (exporters, backup)


def test_only_nginx_is_published(compose):
    published = {s["Service"] for s in compose.services() if any(p.get("PublishedPort") for p in s["Publishers"] or [])}
    assert published == {"nginx"}


def test_post_then_get_through_nginx(compose):
    name = f"compose round trip ü {uuid.uuid4()}"
    accepted = httpx.post(f"{compose.url}/items", json={"name": name, "description": "from make compose-test"})
    assert accepted.status_code == 202, accepted.text
    item_id = accepted.json()["id"]

    def stored() -> dict | None:
        response = httpx.get(f"{compose.url}/items/{item_id}")
        return response.json() if response.status_code == 200 else None

    item = wait_until(stored, 30, f"item {item_id} to be stored by the worker")
    assert item["name"] == name
    assert compose.psql(f"SELECT name FROM items WHERE id = '{item_id}'") == name
    listing = httpx.get(f"{compose.url}/items", params={"limit": 100})
    assert listing.status_code == 200 and item_id in {i["id"] for i in listing.json()["results"]}


def test_the_replica_streams_from_its_slot_and_serves_the_reads(compose):
    assert compose.psql("SELECT slot_name || ':' || active FROM pg_replication_slots") == "items_replica:true"
    assert compose.psql("SELECT state FROM pg_stat_replication") == "streaming"

    def replica_check() -> dict | None:
        check = httpx.get(f"{compose.url}/readyz").json()["checks"].get("replica")
        return check if check and check["ok"] and check["reads"] == "replica" else None

    check = wait_until(replica_check, 30, "/readyz to report the replica serving reads")
    assert 0 <= check["lag_s"] <= check["max_lag_s"]


def test_idempotency_keys_live_in_the_redis_that_never_evicts(compose):
    policy = compose("exec", "-T", "redis-state", "redis-cli", "CONFIG", "GET", "maxmemory-policy").stdout.split()
    assert policy == ["maxmemory-policy", "noeviction"]
    key = f"compose-{uuid.uuid4()}"
    accepted = httpx.post(f"{compose.url}/items", json={"name": "keyed"}, headers={"Idempotency-Key": key})
    assert accepted.status_code == 202, accepted.text
    pattern = "*idem:" + hashlib.sha256(key.encode()).hexdigest()  # as app/idempotency.py names the record
    in_state = compose("exec", "-T", "redis-state", "redis-cli", "--scan", "--pattern", pattern).stdout
    in_cache = compose("exec", "-T", "redis", "redis-cli", "--scan", "--pattern", pattern).stdout
    assert in_state.strip() and not in_cache.strip()


def test_errors_come_in_the_envelope_through_nginx(compose):
    bad = httpx.post(f"{compose.url}/items", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
    huge = httpx.post(f"{compose.url}/items", content=b"x" * 20_000, headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"] == "payload_too_large"


def test_secrets_were_generated_and_production_checks_pass(compose):
    files = compose("exec", "-T", "web", "ls", "/run/items-secrets").stdout.split()
    assert sorted(files) == ["postgres_password", "rabbitmq_password", "secret_key"]
    # The production refusals (items.E001-E003: development key, DEBUG, empty ALLOWED_HOSTS) all pass.
    check = compose(
        "exec",
        "-T",
        "web",
        "/app/deploy/compose/entrypoint.sh",
        "python",
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "ERROR",
    )
    assert "items.E0" not in check.stdout + check.stderr


def test_prometheus_scrapes_every_target(compose):
    # Prometheus is not published; ask it from inside the network (the web image has Python).
    query = (
        "import json, urllib.request as u;"
        "targets = json.load(u.urlopen('http://prometheus:9090/api/v1/targets', timeout=5))['data']['activeTargets'];"
        "print(json.dumps({t['labels']['job']: t['health'] for t in targets}))"
    )

    seen: list[dict] = [{}]

    def all_up() -> dict | None:
        seen[0] = json.loads(compose("exec", "-T", "web", "python", "-c", query).stdout)
        return seen[0] if seen[0] and set(seen[0].values()) == {"up"} else None

    health = wait_until(all_up, 60, lambda: f"every Prometheus target to be up (seen: {seen[0]})")
    assert set(health) == {
        "items-web",
        "items-worker",
        "items-readyz",
        "rabbitmq",
        "rabbitmq-queues",
        "redis",
        "postgres",
        "pgbouncer",
    }


def test_exporters_reach_what_they_watch_and_every_alert_rule_evaluates(compose):
    # A target can be up while its exporter cannot log in (PgBouncer) or /readyz fails: ask for the values too.
    query = (
        "import json, urllib.parse as p, urllib.request as u;"
        "get = lambda path: json.load(u.urlopen('http://prometheus:9090/api/v1/' + path, timeout=5))['data'];"
        "values = {q: [r['value'][1] for r in get('query?query=' + p.quote(q))['result']]"
        " for q in ('pgbouncer_up', 'probe_success', 'redis_up', 'pg_up')};"
        "rules = {r['name']: r['health'] for g in get('rules')['groups'] for r in g['rules']};"
        "print(json.dumps({'values': values, 'rules': rules}))"
    )
    seen: list[dict] = [{}]

    def all_reached() -> dict | None:
        seen[0] = json.loads(compose("exec", "-T", "web", "python", "-c", query).stdout)
        rules = seen[0]["rules"]
        healthy = rules and set(rules.values()) == {"ok"}
        return seen[0] if healthy and all(v == ["1"] for v in seen[0]["values"].values()) else None

    found = wait_until(all_reached, 60, lambda: f"exporters to reach their servers and rules to evaluate ({seen[0]})")
    assert "ItemsNotReady" in found["rules"] and "ItemsDeadLetters" in found["rules"]


def test_scaled_web_replicas_all_get_traffic(compose):
    compose(
        "up", "--detach", "--wait", "--no-recreate", "--scale", "web=2", "--scale", "worker=2", timeout_s=UP_TIMEOUT_S
    )
    replicas = [s for s in compose.services() if s["Service"] in ("web", "worker")]
    assert (
        sorted((s["Service"], s["Health"]) for s in replicas) == [("web", "healthy")] * 2 + [("worker", "healthy")] * 2
    )
    marker = uuid.uuid4().hex

    def both_replicas_serving() -> set[str] | None:
        for _ in range(20):
            httpx.get(f"{compose.url}/healthz", params={"probe": marker})
        logs = compose("logs", "--no-color", "web").stdout
        serving = {line.split("|")[0].strip() for line in logs.splitlines() if marker in line}
        return serving if len(serving) == 2 else None

    # Nginx re-resolves `web` every 5 s (`resolve`), so the new replica gets requests without a reload.
    wait_until(both_replicas_serving, 30, "both web replicas to serve requests")


def test_reads_through_nginx_are_answered_by_the_read_pool(compose):
    marker = uuid.uuid4().hex

    def answered_by() -> set[str] | None:
        httpx.get(f"{compose.url}/items", params={"limit": 5, "probe": marker})
        served = {name for name in ("web", "web-read") if marker in compose("logs", "--no-color", name).stdout}
        return served or None

    assert wait_until(answered_by, 30, "the read to show in an access log") == {"web-read"}


def test_backup_wipe_restore_gives_back_the_same_rows(compose):
    for n in range(20):
        assert httpx.post(f"{compose.url}/items", json={"name": f"backup {n} ✓"}).status_code == 202
    wait_until(lambda: int(compose.psql("SELECT count(*) FROM items WHERE name LIKE 'backup %'")) == 20, 30, "20 rows")
    digest = "SELECT count(*) || ':' || md5(string_agg(id::text || name || description, ',' ORDER BY id)) FROM items"
    before = compose.psql(digest)

    made = compose("exec", "-T", "backup", "/items/backup/pg-backup.sh")
    wrote = re.search(r"wrote (\S+\.sql\.gz)", made.stderr)
    assert wrote is not None, made.stderr
    backup_file = wrote.group(1)
    compose.psql("TRUNCATE items")
    assert compose.psql("SELECT count(*) FROM items") == "0"

    compose("exec", "-T", "backup", "/items/backup/pg-restore.sh", backup_file)
    assert compose.psql(digest) == before
    # ...and the service serves the restored rows.
    assert httpx.get(f"{compose.url}/items", params={"limit": 100}).status_code == 200


def test_down_leaves_no_container_network_or_volume(compose):
    compose("down", "--volumes", "--remove-orphans", "--timeout", "60")
    label = f"label=com.docker.compose.project={PROJECT}"
    for kind in (["ps", "--all"], ["network", "ls"], ["volume", "ls"]):
        argv = ["docker", *kind, "--quiet", "--filter", label]
        left = subprocess.run(argv, capture_output=True, text=True, check=True)
        assert left.stdout.strip() == "", f"docker {' '.join(kind)} still lists: {left.stdout}"
