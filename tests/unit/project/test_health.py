"""/readyz: what is down, never why (internal addresses stay in the log), and cheap however often it is asked."""

import pytest

from project import health

pytestmark = pytest.mark.django_db

_DEAD = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
    "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
}


@pytest.fixture(autouse=True)
def fresh_answer(settings):
    settings.READYZ_CACHE_S = 0.0
    health._readiness.answer = None
    yield
    health._readiness.answer = None


def test_a_dependency_down_is_named_without_its_address_and_the_reason_is_logged(client, settings, caplog):
    settings.CACHES = {**settings.CACHES, "default": _DEAD}
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready" and body["checks"]["cache"]["ok"] is False
    assert "127.0.0.1" not in response.content.decode() and ":1" not in body["checks"]["cache"]["error"]
    assert any("readiness: cache failed" in r.getMessage() for r in caplog.records)


def test_probes_within_the_cache_interval_share_one_run_of_the_checks(client, settings, monkeypatch):
    settings.READYZ_CACHE_S = 60.0
    runs: list[int] = []
    checks = health.configured_checks()

    def counted() -> dict:
        runs.append(1)
        return checks

    monkeypatch.setattr(health, "configured_checks", counted)
    assert [client.get("/readyz").status_code for _ in range(20)] == [200] * 20
    assert len(runs) == 1


class FakeBrokerConnection:
    """kombu's Connection as the broker probe uses it; `failures`: how many channels fail first, as on a connection
    the broker closed since it was opened (it restarted)."""

    opened: list[str] = []

    def __init__(self, url, connect_timeout):
        self.opened.append(url)
        self.failures = 0

    def ensure_connection(self, max_retries):
        return self

    def channel(self):
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("connection reset by peer")
        return self

    def close(self):
        pass

    def release(self):
        pass


@pytest.fixture
def fake_broker(settings, monkeypatch) -> type[FakeBrokerConnection]:
    monkeypatch.setattr(health, "Connection", FakeBrokerConnection)
    monkeypatch.setattr(FakeBrokerConnection, "opened", [])
    settings.BROKER_URL = "amqp://broker.example//"
    return FakeBrokerConnection


def test_the_broker_probe_keeps_its_connection_between_runs(fake_broker):
    probe = health._KeptBroker()
    for _ in range(5):
        probe()
    assert fake_broker.opened == ["amqp://broker.example//"]


def test_a_kept_broker_connection_the_broker_dropped_is_replaced_before_the_broker_is_called_down(fake_broker):
    probe = health._KeptBroker()
    probe()  # the connection is kept...
    probe.connection.failures = 1  # type: ignore[union-attr]  # ...and the broker restarts under it
    probe()  # no error: the second try, on a new connection, reached the broker
    assert len(fake_broker.opened) == 2


def test_a_broker_that_refuses_a_new_connection_is_down(monkeypatch, settings):
    class Refused:
        def __init__(self, url, connect_timeout):
            pass

        def ensure_connection(self, max_retries):
            raise ConnectionRefusedError("refused")

        def release(self):
            pass

    monkeypatch.setattr(health, "Connection", Refused)
    settings.BROKER_URL = "amqp://broker.example//"
    with pytest.raises(ConnectionRefusedError):
        health._KeptBroker()()
