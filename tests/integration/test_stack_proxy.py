"""Nginx in front of the app: its own errors in the JSON envelope, /metrics kept private, micro-cache, rate limits."""

import re

import httpx
import pytest

from tests.support import early_in_a_second, wait_until

pytestmark = pytest.mark.integration

JSON = "application/json; charset=utf-8"


def outside_client(stack) -> httpx.Client:
    """A client connecting from 127.0.0.2: still this host, but neither 127.0.0.1 (to which /metrics is
    served) nor on the test's rate-limit allow-list (127.0.0.1/32)."""
    return httpx.Client(base_url=stack.base_url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)


def answered_by_nginx(response: httpx.Response) -> bool:
    # Every app response carries Django's security headers; an answer Nginx makes itself has none.
    return "x-content-type-options" not in response.headers


def test_a_body_over_16_kib_is_refused_by_nginx_with_the_413_envelope(stack):
    body = b'{"name": "' + b"x" * (17 * 1024) + b'"}'

    response = httpx.post(f"{stack.base_url}/items", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.headers["content-type"] == JSON
    assert response.json() == {"error": "payload_too_large", "detail": "The request body exceeds 16 KiB."}
    assert answered_by_nginx(response)


def test_with_gunicorn_down_nginx_answers_the_502_envelope_until_it_is_back(stack):
    stack.stop("gunicorn")
    try:
        response = httpx.get(f"{stack.base_url}/healthz")

        assert response.status_code == 502
        assert response.headers["content-type"] == JSON
        assert response.json()["error"] == "bad_gateway"
        assert response.json()["detail"]
        assert answered_by_nginx(response)
    finally:
        stack.start("gunicorn")
    assert httpx.get(f"{stack.base_url}/healthz").status_code == 200


def _gets_served(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    # By view: the GET of /metrics itself is not counted.
    name = "django_http_requests_total_by_view_transport_method_total"
    line = "^" + re.escape(name + '{method="GET",transport="http",view="items"}') + r" (\S+)$"
    match = re.search(line, text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def test_reads_go_to_the_read_pool_writes_to_the_web_pool_and_reads_to_the_web_pool_while_the_read_pool_is_down(
    stack,
):
    # Not in the canonical form the micro-cache and the app's fast path take, so every one reaches Django.
    read = f"{stack.base_url}/items?limit=%35"
    by_read_pool, by_web_pool = _gets_served(stack.read_url), _gets_served(stack.web_url)
    assert all(httpx.get(read, timeout=10).status_code == 200 for _ in range(10))
    assert httpx.post(f"{stack.base_url}/items", json={"name": "to the web pool"}, timeout=10).status_code == 202
    assert _gets_served(stack.read_url) - by_read_pool == 10
    assert _gets_served(stack.web_url) == by_web_pool

    stack.stop("gunicorn-read")
    try:
        assert all(httpx.get(read, timeout=10).status_code == 200 for _ in range(10))
        assert _gets_served(stack.web_url) - by_web_pool == 10
    finally:
        stack.start("gunicorn-read")


def test_metrics_are_served_to_loopback_and_a_404_envelope_to_anyone_else(stack):
    inside = httpx.get(f"{stack.base_url}/metrics")
    with outside_client(stack) as client:
        outside = client.get("/metrics")

    assert inside.status_code == 200
    assert "django_http_requests_total_by_method_total" in inside.text
    assert outside.status_code == 404
    assert outside.headers["content-type"] == JSON
    assert outside.json() == {"error": "not_found", "detail": "Not found."}


def test_a_client_outside_the_allow_list_gets_the_429_envelope_past_its_burst(stack):
    with outside_client(stack) as client:
        responses = [client.get("/items?limit=1") for _ in range(80)]

    statuses = [r.status_code for r in responses]
    assert statuses[:20] == [200] * 20, statuses  # the burst of 20 passes
    limited = [r for r in responses if r.status_code == 429]
    assert limited, statuses
    assert limited[0].headers["retry-after"] == "1"
    assert limited[0].headers["content-type"] == JSON
    assert limited[0].json() == {"error": "rate_limited", "detail": "Too many requests; slow down."}
    assert set(statuses) == {200, 429}


def test_an_allow_listed_client_is_never_rate_limited_by_nginx(stack):
    with httpx.Client(base_url=stack.base_url) as client:
        statuses = {client.get("/items?limit=2").status_code for _ in range(80)}

    assert statuses == {200}


def test_get_items_is_micro_cached_and_the_slash_form_is_served_without_a_redirect(stack):
    # A key no other request used: the first must miss. On a key another test had filled, the first could be a
    # STALE answer while a background update refills it, and the second HIT then holds the newer body. Junk
    # parameters would bypass the cache (only canonical query strings are cached), so the fresh key is a page that
    # starts below an item stored just now.
    httpx.post(f"{stack.web_url}/items", json={"name": "below the probe"})  # so the page has a `next`
    item_id = httpx.post(f"{stack.web_url}/items", json={"name": "micro-cache probe"}).json()["id"]

    def newest_page():
        page = httpx.get(f"{stack.web_url}/items?limit=1").json()
        return page if page["results"] and page["results"][0]["id"] == item_id else None

    cursor = wait_until(newest_page, timeout_s=30, interval_s=0.05)["next"].split("cursor=")[1]
    early_in_a_second()
    with httpx.Client(base_url=stack.base_url, follow_redirects=False) as client:
        first = client.get(f"/items?limit=7&cursor={cursor}")
        second = client.get(f"/items?limit=7&cursor={cursor}")
        other_query = client.get(f"/items?limit=8&cursor={cursor}")
        slash = client.get("/items/?limit=7")

    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache-status"] == "MISS"
    assert second.headers["x-cache-status"] == "HIT"
    assert second.json() == first.json()
    assert other_query.headers["x-cache-status"] != "HIT"  # the query string is part of the key
    assert slash.status_code == 200
    assert "location" not in slash.headers


def test_post_is_never_served_from_the_cache(stack):
    payload = {"name": "cache probe", "description": "same body twice"}
    with httpx.Client(base_url=stack.base_url) as client:
        first = client.post("/items", json=payload)
        second = client.post("/items", json=payload)

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert "x-cache-status" not in second.headers
