"""The ASGI fast path answers only what the Django view would answer identically; the rest goes to Django."""

import asyncio
import time
import uuid
from typing import Any, cast

import pytest

from app import cache
from app.fast_path import FastPath


def _key(path: str, query: bytes = b""):
    return FastPath(app=None)._key({"path": path, "query_string": query})


@pytest.mark.parametrize(
    ("path", "query", "key"),
    [
        ("/items", b"", cache.page_key(20, None)),
        ("/items/", b"", cache.page_key(20, None)),
        ("/items", b"limit=5", cache.page_key(5, None)),
        ("/items", b"limit=5&limit=7", cache.page_key(7, None)),  # last wins, as QueryDict.get
        ("/items", b"limit=5&cursor=abc:def", cache.page_key(5, "abc:def")),
        ("/items", b"colour=red", cache.page_key(20, None)),  # unknown parameters are ignored
    ],
)
def test_cacheable_list_requests_map_to_the_key_the_view_fills(path, query, key):
    assert _key(path, query)[0] == key


@pytest.mark.parametrize("query", [b"limit=0", b"limit=101", b"limit=abc", b"limit=", b"cursor=a%3Ab"])
def test_requests_django_must_answer_or_decode_are_passed_on(query):
    assert _key("/items", query) is None


def test_an_absent_cursor_and_an_empty_one_are_different_keys():
    # "cursor=" is a 400 from Django; it must never be served the first page from the cache.
    assert cache.page_key(20, None) != cache.page_key(20, "")


def test_item_paths_map_to_the_canonical_item_key():
    item_id = uuid.uuid4()
    assert _key(f"/items/{item_id}")[0] == cache.item_key(str(item_id))
    assert _key(f"/items/{str(item_id).upper()}/")[0] == cache.item_key(str(item_id))
    assert _key("/items/not-a-uuid") is None
    assert _key(f"/items/{item_id}/extra") is None
    assert _key("/healthz") is None


def test_entries_round_trip():
    body = '{"name":"日本"}'.encode()
    assert cache.decode(cache.encode(7, '"tag"', body)) == (7, '"tag"', body)


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
    assert not cache.page_key(20, "c:lock").startswith("lock:")
    with pytest.raises(ValueError):
        cache.decode(b"1")  # a lock's value: fresh() and get_or_build treat it as a miss


# --- The fast path reads a query exactly as Django does ------------------------------------------------------

UGLY_QUERIES = [
    b"lim%69t=50",  # a percent-encoded name: Django reads limit=50
    b"%6C%69%6D%69%74=7",
    b"limit=5&lim%69t=50",  # repeated, one of them encoded: the last wins
    b"lim%69t=50&limit=5",
    b"limit=%35%30",  # an encoded value
    b"limit=+5",  # "+" is a space: " 5" is not a limit, a 400
    b"limit=5+",
    b"li+mit=50",  # the name "li mit": ignored, the default page
    b"limit=50;limit=5",  # ";" separates nothing: one value "50;limit=5", a 400
    b"limit=5%00",
    b"limit=%EF%BC%95",  # a full-width 5
    b"LIMIT=50",
    b"limit",
    b"limit=5&limit=",
    b"=&limit=3&&&",
    b"limit=50&" + b"x=1&" * 1000,  # more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS: Django's 400
    b"limit=7&cursor=",
]


class _AnyKeyCache:
    """Stands in for AsyncLookup: has an entry under every key, whose body names the key."""

    async def fresh(self, key: str, *, versioned: bool) -> tuple[str, bytes]:
        return '"tag"', key.encode()


def _cached_by_django(client, key: str) -> tuple[int, bytes] | None:
    """What Django's view puts in the cache under a page key (asked with a plainly urlencoded query)."""
    limit, _, cursor = key.removeprefix("items:page:").partition(":")
    params = {"limit": limit} if cursor == "-" else {"limit": limit, "cursor": cursor[1:]}
    response = client.get("/items", params)
    return (200, response.content) if response.status_code == 200 else None


def _fast_path_messages(query: bytes, accept: bytes | None = None) -> list[Any]:
    """What the fast path sends for GET /items?<query> over a cache with an entry under every key: the ASGI
    messages, or ["django"] when it handed the request to Django."""
    sent: list[Any] = []

    async def django(scope, receive, send):
        sent.append("django")

    async def send(message):
        sent.append(message)

    fast_path = FastPath(django)
    fast_path.lookup = cast(cache.AsyncLookup, _AnyKeyCache())
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "query_string": query,
        "headers": [(b"host", b"localhost"), *([(b"accept", accept)] if accept is not None else [])],
    }
    asyncio.run(fast_path(scope, None, send))
    return sent


def _fast_path_answer(client, query: bytes, accept: bytes | None = None) -> tuple[int, bytes] | None:
    """(status, body) from the fast path over a cache that Django filled, or None when it handed the request
    to Django."""
    sent = _fast_path_messages(query, accept)
    if sent == ["django"]:
        return None
    assert sent[0]["status"] == 200
    return _cached_by_django(client, sent[1]["body"].decode())


@pytest.fixture
def sixty_items(db):
    import datetime as dt

    from app.ids import uuid7
    from app.models import Item

    start_ms = 1_700_000_000_000
    Item.objects.bulk_create(
        Item(
            id=uuid7(start_ms + n),
            name=f"item-{n}",
            description="",
            created_at=dt.datetime.fromtimestamp((start_ms + n) / 1000, tz=dt.UTC),
        )
        for n in range(60)
    )


def _cursor(client) -> str:
    return client.get("/items", {"limit": 5}).json()["next"].rpartition("cursor=")[2]


@pytest.mark.parametrize("query", UGLY_QUERIES)
def test_the_fast_path_answers_an_ugly_query_as_django_does_or_leaves_it_to_django(query, client, sixty_items):
    fast = _fast_path_answer(client, query)
    django = client.get("/items", QUERY_STRING=query.decode())
    if fast is not None:
        assert fast == (django.status_code, django.content)


def test_ugly_cursors_are_answered_as_django_does(client, sixty_items):
    cursor = _cursor(client)
    for query in [
        f"limit=5&cursor={cursor}",
        f"cursor={cursor}&limit=5&limit=7",
        "limit=5&cursor=" + cursor.replace(":", "%3A"),
        "limit=5&curs%6Fr=" + cursor,
        "limit=5&cursor=" + cursor + "&cursor=",
        "limit=5&cursor=" + cursor + "+",
    ]:
        fast = _fast_path_answer(client, query.encode())
        django = client.get("/items", QUERY_STRING=query)
        if fast is not None:
            assert fast == (django.status_code, django.content), query


def test_canonical_queries_are_still_answered_by_the_fast_path(client, sixty_items):
    for query in [
        b"",
        b"limit=50",
        b"limit=5&limit=7",
        b"colour=red&limit=3",
        b"limit=5&cursor=" + _cursor(client).encode(),
    ]:
        fast = _fast_path_answer(client, query)
        django = client.get("/items", QUERY_STRING=query.decode())
        assert fast == (200, django.content), query


@pytest.mark.parametrize(
    "accept", [b"text/html", b"application/json; q=0", b"image/png, text/*", b"application/xml;q=0.9"]
)
def test_an_accept_that_excludes_json_is_left_to_django_which_answers_406(client, sixty_items, accept):
    assert _fast_path_answer(client, b"limit=5", accept=accept) is None
    assert client.get("/items", {"limit": 5}, headers={"Accept": accept.decode()}).status_code == 406


@pytest.mark.parametrize(
    "accept", [b"*/*", b"application/json", b"text/html, application/json;q=0.5", b"application/*", b"APPLICATION/JSON"]
)
def test_an_accept_that_admits_json_is_answered_from_the_cache(client, sixty_items, accept):
    assert _fast_path_answer(client, b"limit=5", accept=accept) is not None


def test_a_hit_is_for_nginx_to_keep_until_the_second_ends_as_django_says():
    before = int(time.time())
    headers = dict(_fast_path_messages(b"")[0]["headers"])
    assert headers[b"x-accel-expires"] in {b"@%d" % second for second in range(before, int(time.time()) + 1)}
