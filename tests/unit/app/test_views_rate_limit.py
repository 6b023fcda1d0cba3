"""django-ratelimit on POST, keyed by the real client IP; off in the embedded default."""

import pytest

from app.models import Item
from tests.support import assert_envelope

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited(settings):
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_POST_RATE = "3/m"
    settings.RATELIMIT_ALLOWLIST = []  # whatever the shell running the tests exports (a load-test allow-list)


def test_rate_limiting_is_off_in_the_embedded_default(post_item):
    assert all(post_item({"name": str(n)}).status_code == 202 for n in range(10))


def test_over_the_rate_post_answers_429_with_retry_after_and_stores_nothing(limited, post_item):
    assert [post_item({"name": str(n)}).status_code for n in range(3)] == [202, 202, 202]
    response = post_item({"name": "one too many"})
    assert_envelope(response, 429, "rate_limited")
    # When this client's one-minute window ends: the POST would be accepted then, not sooner.
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Item.objects.count() == 3


def test_retry_after_is_when_the_clients_window_ends(limited, settings, post_item, monkeypatch):
    import django_ratelimit.core

    settings.RATELIMIT_POST_RATE = "1/h"
    post_item({"name": "first"})
    now = django_ratelimit.core.time.time()
    retry_after = int(post_item({"name": "second"})["Retry-After"])
    monkeypatch.setattr(django_ratelimit.core.time, "time", lambda: now + retry_after - 1)
    assert post_item({"name": "a second before"}).status_code == 429
    monkeypatch.setattr(django_ratelimit.core.time, "time", lambda: now + retry_after + 1)
    assert post_item({"name": "after it"}).status_code == 202


def test_each_client_behind_the_proxy_has_its_own_budget(limited, client):
    def post(ip):
        return client.post(
            "/items", data=b'{"name":"x"}', content_type="application/json", headers={"X-Forwarded-For": ip}
        )

    assert [post("198.51.100.1").status_code for _ in range(4)] == [202, 202, 202, 429]
    assert post("198.51.100.2").status_code == 202


def test_allow_listed_clients_are_not_limited(limited, settings, post_item):
    settings.RATELIMIT_ALLOWLIST = ["127.0.0.0/8"]
    assert all(post_item({"name": str(n)}).status_code == 202 for n in range(6))


def test_gets_are_never_limited_by_django(limited, client):
    assert all(client.get("/items").status_code == 200 for _ in range(10))


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens there


def test_with_the_counter_store_down_posts_fail_open_and_are_counted(limited, settings, post_item):
    from prometheus_client import REGISTRY

    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "project.ratelimit_cache.FailOpenRedisCache",
            "LOCATION": f"redis://127.0.0.1:{_closed_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    settings.RATELIMIT_USE_CACHE = "ratelimit"
    before = REGISTRY.get_sample_value("items_ratelimit_fail_open_total") or 0.0

    assert [post_item({"name": str(n)}).status_code for n in range(5)] == [202] * 5

    assert REGISTRY.get_sample_value("items_ratelimit_fail_open_total") == before + 5
    assert Item.objects.count() == 5
