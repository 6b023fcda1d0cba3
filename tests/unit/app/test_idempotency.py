"""Idempotency-Key on POST: replay returns the same 202 and id, another body is a 422."""

import pytest

from app.models import Item
from tests.support import assert_envelope

pytestmark = pytest.mark.django_db


def test_replaying_a_key_with_the_same_body_returns_the_same_202_and_stores_once(post_item):
    first = post_item({"name": "once", "description": "d"}, **{"Idempotency-Key": "order-42"})
    again = post_item({"name": "once", "description": "d"}, **{"Idempotency-Key": "order-42"})

    assert first.status_code == again.status_code == 202
    assert first.content == again.content
    assert first["Location"] == again["Location"]
    assert Item.objects.count() == 1


def test_key_order_and_whitespace_in_the_json_do_not_matter(post_item):
    first = post_item(b'{"name": "x", "description": "y"}', **{"Idempotency-Key": "k"})
    again = post_item(b'{"description":"y","name":"x"}', **{"Idempotency-Key": "k"})
    assert first.json()["id"] == again.json()["id"]


def test_the_same_key_with_another_body_is_422_and_stores_nothing_new(post_item):
    post_item({"name": "first"}, **{"Idempotency-Key": "k-1"})
    conflict = post_item({"name": "second"}, **{"Idempotency-Key": "k-1"})

    body = assert_envelope(conflict, 422, "idempotency_conflict")
    assert "Idempotency-Key" in body["detail"]
    assert list(Item.objects.values_list("name", flat=True)) == ["first"]


def test_different_keys_make_different_items(post_item):
    a = post_item({"name": "same"}, **{"Idempotency-Key": "a"}).json()["id"]
    b = post_item({"name": "same"}, **{"Idempotency-Key": "b"}).json()["id"]
    assert a != b
    assert Item.objects.count() == 2


def test_without_a_key_every_post_is_a_new_item(post_item):
    post_item({"name": "same"})
    post_item({"name": "same"})
    assert Item.objects.count() == 2


def test_a_key_is_kept_for_24_hours(post_item, settings):
    from django.core.cache import caches

    from app.idempotency import _cache_key

    post_item({"name": "x"}, **{"Idempotency-Key": "ttl"})
    state = caches["state"]
    expiry = state._expire_info[state.make_key(_cache_key("ttl"))]  # type: ignore[attr-defined]  # locmem's own bookkeeping; django-stubs omit it
    import time

    assert 24 * 3600 - 60 < expiry - time.time() <= 24 * 3600


_DEAD = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
    "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
}
DEAD_REDIS = {"default": _DEAD, "state": _DEAD}


def test_with_the_key_store_down_a_keyed_post_is_a_503_and_stores_nothing(post_item, settings):
    settings.CACHES = DEAD_REDIS
    response = post_item({"name": "x"}, **{"Idempotency-Key": "k"})
    assert_envelope(response, 503, "idempotency_unavailable")
    assert int(response["Retry-After"]) >= 1
    assert Item.objects.count() == 0
    assert post_item({"name": "no key"}).status_code == 202  # without a key nothing needs the store


def test_the_embedded_default_remembers_a_key_however_many_others_came_since(post_item):
    # Django's local-memory cache culls a third of its entries past 300 by default: a replay after a few
    # hundred other keys stored a second item, and a reused key with another body was accepted.
    first = post_item({"name": "once"}, **{"Idempotency-Key": "remember-me"}).json()["id"]
    for n in range(400):
        post_item({"name": "filler"}, **{"Idempotency-Key": f"other-{n}"})
    assert post_item({"name": "once"}, **{"Idempotency-Key": "remember-me"}).json()["id"] == first
    assert_envelope(post_item({"name": "DIFFERENT"}, **{"Idempotency-Key": "other-0"}), 422, "idempotency_conflict")
    assert Item.objects.filter(name="once").count() == 1


def test_idempotency_records_are_kept_apart_from_the_evicting_response_cache(settings):
    from django.core.cache import caches

    from app.idempotency import _state

    assert _state() is caches["state"] and caches["state"] is not caches["default"]
