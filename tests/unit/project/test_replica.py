"""The router and the replica's health as a process sees it: writes and migrations on the primary, reads on the
replica only while it is up, within REPLICA_MAX_LAG_S and past the commit a cached page needs; a failed replica
read is answered by the primary. The real servers are in tests/integration/test_read_replica.py."""

import contextlib
import time

import pytest
from django.db import OperationalError
from prometheus_client import REGISTRY

from project import replica
from tests.unit.project.test_checks import _run

LSN = 1_000_000


def _fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("items_replica_fallback_total", {"reason": reason}) or 0.0


def _reads(database: str) -> float:
    return REGISTRY.get_sample_value("items_db_reads_total", {"database": database}) or 0.0


class FakeDatabases:
    """What the sampler's two queries answer: the primary's WAL position and the replica's replay state."""

    def __init__(self) -> None:
        self.primary_lsn = LSN
        self.replayed = LSN
        self.replay_age_s: float | None = 30.0  # the last commit replayed long ago: the primary is idle
        self.replica_down = False
        self.asked: list[str] = []

    def scalar(self, alias: str, sql: str) -> tuple:
        self.asked.append(alias)
        if alias == replica.PRIMARY:
            return (self.primary_lsn,)
        if self.replica_down:
            raise OperationalError("connection refused")
        if sql == replica._REPLAY_LSN_SQL:
            return (self.replayed,)
        return (True, self.replayed, self.replay_age_s)


@pytest.fixture
def databases(monkeypatch, settings) -> FakeDatabases:
    fake = FakeDatabases()
    monkeypatch.setattr(replica, "configured", lambda: True)
    monkeypatch.setattr(replica, "_scalar", fake.scalar)
    monkeypatch.setattr(replica, "_discard_connection", lambda alias: None)
    monkeypatch.setattr(
        replica, "_watchdog", type("NoWatchdog", (), {"limit": lambda self, a: contextlib.nullcontext()})()
    )
    monkeypatch.setattr(replica, "health", replica.ReplicaHealth())
    settings.REPLICA_MAX_LAG_S = 5.0
    return fake


def _next_sample_due() -> None:
    replica.health.sample = replica.Sample(**{**replica.health.sample.__dict__, "taken_at": float("-inf")})


# --- the router ------------------------------------------------------------------------------------------------


def test_writes_and_migrations_go_to_the_primary_only():
    router = replica.PrimaryReplicaRouter()
    assert router.db_for_write(object) == "default"
    assert router.allow_migrate("default", "items") is True
    assert router.allow_migrate("replica", "items") is False  # it gets the schema from the primary's WAL
    assert router.allow_migrate("replica", "contenttypes") is False


def test_without_a_replica_every_read_goes_to_the_primary_and_no_fallback_is_counted():
    assert replica.configured() is False  # the embedded default
    unavailable = _fallbacks("unavailable")
    assert replica.PrimaryReplicaRouter().db_for_read(object) == "default"
    assert replica.read(lambda alias: alias) == "default"
    assert _fallbacks("unavailable") == unavailable


def test_the_real_settings_route_through_the_router_and_mirror_the_replica_in_tests():
    result = _run(
        "-c",
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'project.settings'); django.setup();"
        "from django.conf import settings as s; print(s.DATABASE_ROUTERS, s.DATABASES['replica']['NAME'],"
        " s.DATABASES['replica']['TEST'], s.DATABASES['replica']['CONN_MAX_AGE'], s.REPLICA_MAX_LAG_S)",
        DATABASE_URL="postgres://items:pw@bouncer:6432/items",
        REPLICA_DATABASE_URL="postgres://items:pw@bouncer:6432/items_ro",
        REPLICA_MAX_LAG_S="2.5",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "['project.replica.PrimaryReplicaRouter']",
        "items_ro",
        "{'MIRROR':",
        "'default'}",
        "60",
        "2.5",
    ]


def test_a_replica_without_a_primary_url_is_refused_naming_both_variables():
    result = _run("manage.py", "check", REPLICA_DATABASE_URL="postgres://items:pw@bouncer:6432/items_ro")
    assert result.returncode != 0
    assert "REPLICA_DATABASE_URL is set but DATABASE_URL is not" in result.stderr


def test_a_bad_replica_url_is_named_without_its_password():
    result = _run(
        "manage.py",
        "check",
        DATABASE_URL="postgres://items:pw@bouncer:6432/items",
        REPLICA_DATABASE_URL="mysql://items:TopSecretPW@db/items",
    )
    assert result.returncode != 0
    assert "REPLICA_DATABASE_URL='mysql://items:***@db/items' is not a PostgreSQL URL" in result.stderr
    assert "TopSecretPW" not in result.stderr + result.stdout


# --- health and routing ----------------------------------------------------------------------------------------


def test_a_healthy_replica_serves_reads_and_is_sampled_at_most_every_interval(databases):
    assert replica.health.alias_for() == "replica"
    asked = len(databases.asked)
    for _ in range(50):
        assert replica.health.alias_for() == "replica"
    assert len(databases.asked) == asked  # one sample per CHECK_INTERVAL_S, not one per read


def test_an_idle_primary_is_not_taken_for_a_lagging_replica(databases):
    databases.replay_age_s = 3600.0  # nothing committed for an hour: replay_timestamp is old, the replica current
    replica.health.take_sample()
    assert replica.health.sample.lag_s == 0.0
    assert replica.health.alias_for() == "replica"


def test_a_replica_behind_past_the_limit_sends_reads_to_the_primary_and_gets_them_back_once_caught_up(databases):
    replica.health.take_sample()
    databases.primary_lsn = LSN + 500  # the primary moved on, the replica (replay paused) did not
    databases.replay_age_s = 6.0
    _next_sample_due()
    lagging = _fallbacks("lagging")
    assert replica.health.alias_for() == "default"
    assert (replica.health.sample.lag_s or 0.0) >= 6.0
    assert _fallbacks("lagging") == lagging + 1

    databases.replayed = LSN + 500
    _next_sample_due()
    assert replica.health.alias_for() == "replica"
    assert replica.health.sample.lag_s == 0.0


def test_lag_counts_from_when_this_process_first_saw_a_position_the_replica_has_not_replayed(databases):
    databases.replay_age_s = None  # no commit replayed since the replica started
    replica.health.take_sample()
    databases.primary_lsn = LSN + 10
    replica.health.take_sample()
    seen_at = time.monotonic()
    time.sleep(0.05)
    databases.primary_lsn = LSN + 20
    replica.health.take_sample()
    # From the first position it has not replayed (LSN + 10), not the last.
    assert (replica.health.sample.lag_s or 0.0) >= time.monotonic() - seen_at - 0.01


def test_a_replica_that_does_not_answer_sends_reads_to_the_primary(databases):
    databases.replica_down = True
    unavailable = _fallbacks("unavailable")
    assert replica.health.alias_for() == "default"
    assert _fallbacks("unavailable") == unavailable + 1
    databases.replica_down = False
    _next_sample_due()
    assert replica.health.alias_for() == "replica"


def test_a_page_needing_a_commit_the_replica_has_replayed_is_read_there(databases):
    assert replica.health.alias_for(min_lsn=LSN) == "replica"


def test_a_page_needing_a_commit_the_replica_replays_meanwhile_waits_for_it(databases, monkeypatch):
    replica.health.take_sample()
    polls = []

    def replay_soon(seconds: float) -> None:
        polls.append(seconds)
        databases.replayed = LSN + 100

    monkeypatch.setattr(replica.time, "sleep", replay_soon)
    databases.replayed = LSN
    assert replica.health.alias_for(min_lsn=LSN + 100) == "replica"
    assert polls == [replica._CATCHUP_POLL_FIRST_S]


def test_a_page_needing_a_commit_the_replica_has_not_replayed_in_time_is_read_from_the_primary(databases):
    replica.health.take_sample()
    behind = _fallbacks("behind")
    started = time.monotonic()
    assert replica.health.alias_for(min_lsn=LSN + 1) == "default"
    assert time.monotonic() - started < replica.CATCHUP_WAIT_S + 0.1  # waited briefly, then gave up
    assert _fallbacks("behind") == behind + 1


def test_a_version_whose_lsn_is_unknown_is_read_from_the_primary(databases):
    assert replica.health.alias_for(min_lsn=replica.UNKNOWN_LSN) == "default"


def test_a_read_that_fails_on_the_replica_is_answered_by_the_primary_in_the_same_call(databases):
    asked = []

    def query(alias: str) -> list[str]:
        asked.append(alias)
        if alias == "replica":
            raise OperationalError("server closed the connection unexpectedly")
        return ["row"]

    errors, primary = _fallbacks("error"), _reads("primary")
    assert replica.read(query) == ["row"]
    assert asked == ["replica", "default"]
    assert _fallbacks("error") == errors + 1
    assert _reads("primary") == primary + 1
    assert replica.health.sample.up is False  # the next reads go straight to the primary
    assert replica.health.alias_for() == "default"


def test_an_item_the_replica_lacks_is_asked_of_the_primary(databases):
    asked = []

    def query(alias: str):
        asked.append(alias)
        return {"id": 1} if alias == "default" else None

    assert replica.read(query, recheck_empty=True) == {"id": 1}
    assert asked == ["replica", "default"]


def test_the_commit_lsn_is_read_only_with_a_replica(databases, monkeypatch):
    assert replica.primary_lsn() == LSN
    monkeypatch.setattr(replica, "configured", lambda: False)
    assert replica.primary_lsn() is None
