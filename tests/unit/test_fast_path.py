"""The ASGI fast path answers only what the Django view would answer identically; the rest goes to Django."""

import asyncio
import uuid

import pytest

from app import response_cache
from app.fast_path import FastPath


def _key(path: str, query: bytes = b""):
    return FastPath(app=None)._key({"path": path, "query_string": query})


@pytest.mark.parametrize(
    ("path", "query", "key"),
    [
        ("/items", b"", response_cache.page_key(20, None)),
        ("/items/", b"", response_cache.page_key(20, None)),
        ("/items", b"limit=5", response_cache.page_key(5, None)),
        ("/items", b"limit=5&limit=7", response_cache.page_key(7, None)),  # last wins, as QueryDict.get
        ("/items", b"limit=5&cursor=abc:def", response_cache.page_key(5, "abc:def")),
        ("/items", b"colour=red", response_cache.page_key(20, None)),  # unknown parameters are ignored
    ],
)
def test_cacheable_list_requests_map_to_the_key_the_view_fills(path, query, key):
    assert _key(path, query)[0] == key


@pytest.mark.parametrize("query", [b"limit=0", b"limit=101", b"limit=abc", b"limit=", b"cursor=a%3Ab"])
def test_requests_django_must_answer_or_decode_are_passed_on(query):
    assert _key("/items", query) is None


def test_an_absent_cursor_and_an_empty_one_are_different_keys():
    # "cursor=" is a 400 from Django; it must never be served the first page from the cache.
    assert response_cache.page_key(20, None) != response_cache.page_key(20, "")


def test_item_paths_map_to_the_canonical_item_key():
    item_id = uuid.uuid4()
    assert _key(f"/items/{item_id}")[0] == response_cache.item_key(str(item_id))
    assert _key(f"/items/{str(item_id).upper()}/")[0] == response_cache.item_key(str(item_id))
    assert _key("/items/not-a-uuid") is None
    assert _key(f"/items/{item_id}/extra") is None
    assert _key("/healthz") is None


def test_entries_round_trip():
    body = '{"name":"日本"}'.encode()
    assert response_cache.decode(response_cache.encode(7, '"tag"', body)) == (7, '"tag"', body)


def test_the_embedded_default_serves_everything_through_django():
    from project.asgi import application

    assert not isinstance(application, FastPath)  # no Redis, no fast path


def test_posts_always_go_to_django():
    called = []

    async def django(scope, receive, send):
        called.append(scope["method"])

    scope = {"type": "http", "method": "POST", "path": "/items", "query_string": b"", "headers": []}
    asyncio.run(FastPath(django)(scope, None, None))
    assert called == ["POST"]


def test_no_client_supplied_cursor_can_name_a_lock_or_be_read_as_an_entry():
    assert not response_cache.page_key(20, "c:lock").startswith("lock:")
    with pytest.raises(ValueError):
        response_cache.decode(b"1")  # a lock's value: fresh() and get_or_build treat it as a miss
