"""The API contract (README.md, "API") as a client sees it through Nginx, on the real stack."""

import time
import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration

JSON = "application/json; charset=utf-8"


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=10, follow_redirects=False) as client:
        yield client


def _envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["detail"]
    return body


def _until_stored(api: httpx.Client, location: str, timeout_s: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = api.get(location)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_post_is_accepted_then_stored_by_the_worker_with_exact_unicode(api):
    name = "Grüße 🎉 日本"
    accepted = api.post("/items", json={"name": name, "description": "é" * 2000})
    assert accepted.status_code == 202
    assert accepted.headers["content-type"] == JSON
    item_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/items/{item_id}"

    stored = _until_stored(api, accepted.headers["location"])
    assert stored.status_code == 200
    assert stored.json()["name"] == name
    assert stored.json()["description"] == "é" * 2000


def test_the_list_pages_newest_first_with_a_cursor_through_nginx(api):
    ids = [api.post("/items/", json={"name": f"page-{n}"}).json()["id"] for n in range(3)]
    _until_stored(api, f"/items/{ids[-1]}")
    # Bounded staleness, not instant: a page cached before (another test's, the fuzzer's) is served once more as
    # STALE while Nginx refreshes it in the background, so look again until the micro-cache has caught up.
    deadline = time.monotonic() + 10
    while True:
        first = api.get("/items?limit=2").json()
        second = api.get(first["next"]).json()
        newest = [item["id"] for item in first["results"] + second["results"]]
        if newest[:3] == list(reversed(ids)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert newest[:3] == list(reversed(ids))


def test_etag_and_if_none_match_give_304_through_nginx(api):
    # A stored item never changes (a page may, as other tests' items arrive): its ETag is stable.
    location = api.post("/items", json={"name": "etag"}).headers["location"]
    first = _until_stored(api, location)
    assert first.headers["etag"]
    assert "max-age" in first.headers["cache-control"]
    not_modified = api.get(location, headers={"If-None-Match": first.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.content == b""


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "POST",
            "/items",
            {"content": b"{bad", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        ("POST", "/items", {"json": {"name": ""}}, 400, "invalid"),
        ("POST", "/items", {"json": ["x"]}, 400, "invalid"),
        ("POST", "/items", {"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ("GET", "/items?limit=0", {}, 400, "invalid_parameter"),
        ("GET", "/items?cursor=forged", {}, 400, "invalid_parameter"),
        ("GET", f"/items/{uuid.uuid4()}", {}, 404, "not_found"),
        ("GET", "/items/not-a-uuid", {}, 404, "not_found"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("DELETE", "/items", {}, 405, "method_not_allowed"),
        ("PUT", "/items/", {"json": {}}, 405, "method_not_allowed"),
        ("POST", "/items", {"json": {"name": "x" * 20_000}}, 413, "payload_too_large"),
    ],
)
def test_every_error_reaches_the_client_in_the_envelope_and_never_as_a_redirect(
    api, method, path, kwargs, status, code
):
    response = api.request(method, path, **kwargs)
    assert not response.is_redirect
    _envelope(response, status, code)


def test_idempotency_replay_and_conflict_through_nginx(api):
    key = {"Idempotency-Key": f"nginx-{uuid.uuid4()}"}
    first = api.post("/items", json={"name": "once"}, headers=key)
    again = api.post("/items", json={"name": "once"}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    _envelope(api.post("/items", json={"name": "other"}, headers=key), 422, "idempotency_conflict")


def test_health_schema_and_docs_are_served(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready["status"] == "ok"
    assert set(ready["checks"]) == {"database", "cache", "state", "broker", "replica"}
    assert api.get("/schema", headers={"Accept": "application/json"}).json()["openapi"].startswith("3.")
    docs = api.get("/docs")
    assert docs.status_code == 200
    asset = api.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_security_headers_reach_the_client(api):
    response = api.get("/items")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "set-cookie" not in response.headers  # a cookie would also make Nginx refuse to cache


def test_an_idempotency_key_survives_the_response_cache_losing_everything(api, stack):
    # Anonymous GETs decide what fills the response cache, and when it is full it evicts. Emptying it outright
    # is the most an attacker could do to it: the key lives in the other Redis, which never evicts.
    import redis

    key = {"Idempotency-Key": f"evict-{uuid.uuid4()}"}
    first = api.post("/items", json={"name": "once-only"}, headers=key)
    assert first.status_code == 202
    cache = redis.Redis.from_url(stack.env["REDIS_URL"])
    assert cache.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
    cache.flushall()
    again = api.post("/items", json={"name": "once-only"}, headers=key)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    state = redis.Redis.from_url(stack.env["STATE_REDIS_URL"])
    assert state.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
