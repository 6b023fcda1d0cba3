"""The items API contract (README.md, "API"), on the embedded default."""

import json
import re
import time
import uuid

import pytest

from app.models import Item
from tests.support import assert_envelope

pytestmark = pytest.mark.django_db


def test_post_answers_202_with_the_id_and_location_and_stores_the_row(post_item, client):
    response = post_item({"name": "lamp", "description": "brass"})

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    item_id = uuid.UUID(body["id"])
    assert item_id.version == 7
    assert response["Location"] == f"/items/{item_id}"
    assert Item.objects.filter(id=item_id, name="lamp", description="brass").exists()

    item = client.get(response["Location"]).json()
    assert item["id"] == str(item_id)
    assert item["name"] == "lamp"
    assert item["description"] == "brass"
    assert item["created_at"].endswith("Z")


def test_description_is_optional(post_item, client):
    response = post_item({"name": "only a name"})
    assert response.status_code == 202
    assert client.get(response["Location"]).json()["description"] == ""


@pytest.mark.parametrize("name", ["héllo wörld", "日本語の名前", "🎉🚀 emoji", "Ω≈ç√∫", "a\u0301 combining", "x" * 200])
def test_unicode_and_emoji_names_round_trip_exactly(post_item, client, name):
    response = post_item({"name": name, "description": "🧪" * 2000})
    assert response.status_code == 202
    item = client.get(response["Location"]).json()
    assert item["name"] == name
    assert item["description"] == "🧪" * 2000


@pytest.mark.parametrize("path", ["/items", "/items/"])
def test_both_spellings_of_the_collection_work_for_get_and_post_without_redirect(post_item, client, path):
    assert post_item({"name": "slash"}, path=path).status_code == 202
    response = client.get(path)
    assert response.status_code == 200
    assert [item["name"] for item in response.json()["results"]] == ["slash"]


def test_item_path_with_trailing_slash_works_too(post_item, client):
    location = post_item({"name": "x"})["Location"]
    assert client.get(location + "/").status_code == 200


def test_list_is_newest_first_and_pages_with_an_opaque_cursor(post_item, client):
    ids = [post_item({"name": f"item {n}"}).json()["id"] for n in range(5)]

    seen = []
    url = "/items?limit=2"
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        page = response.json()
        assert len(page["results"]) <= 2
        seen += [item["id"] for item in page["results"]]
        url = page["next"]
        pages += 1

    assert seen == list(reversed(ids))
    assert pages == 3


def test_default_page_is_20_items_and_the_last_page_has_no_next(post_item, client):
    Item.objects.bulk_create(
        Item(id=uuid.uuid4(), name=str(n), description="", created_at="2026-01-01T00:00:00Z") for n in range(25)
    )
    first = client.get("/items").json()
    assert len(first["results"]) == 20
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert second["next"] is None


def test_list_pages_cost_one_query(client, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert client.get("/items?limit=100").status_code == 200


def test_get_has_etag_and_cache_control_and_if_none_match_gives_304(post_item, client):
    post_item({"name": "cached"})
    first = client.get("/items")
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first["Cache-Control"] == "public, max-age=1"

    not_modified = client.get("/items", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag

    post_item({"name": "newer"})
    assert client.get("/items", headers={"If-None-Match": etag}).status_code == 200


@pytest.mark.parametrize(("ttl", "seconds_ahead"), [(1, 0), (5, 4)])
def test_a_200_is_for_nginx_to_keep_until_a_whole_second_ends(post_item, client, settings, ttl, seconds_ahead):
    """MICROCACHE_TTL_S as an absolute X-Accel-Expires: the micro-cache keeps the answer until the end of the
    second TTL - 1 from now, never longer than the TTL."""
    settings.MICROCACHE_TTL_S = ttl
    location = post_item({"name": "cached"})["Location"]
    for path in ("/items", location):
        before = int(time.time())
        response = client.get(path)
        stamps = {f"@{second + seconds_ahead}" for second in range(before, int(time.time()) + 1)}
        assert response["X-Accel-Expires"] in stamps
        assert not client.get(path, headers={"If-None-Match": response["ETag"]}).has_header("X-Accel-Expires")


def test_microcache_ttl_0_keeps_answers_out_of_the_micro_cache(post_item, client, settings):
    settings.MICROCACHE_TTL_S = 0
    post_item({"name": "not for nginx"})
    assert not client.get("/items").has_header("X-Accel-Expires")


def test_item_get_has_etag_and_304(post_item, client):
    location = post_item({"name": "one"})["Location"]
    etag = client.get(location)["ETag"]
    assert client.get(location, headers={"If-None-Match": f"W/{etag}"}).status_code == 304


def test_unknown_item_is_404_until_stored(client):
    assert_envelope(client.get(f"/items/{uuid.uuid4()}"), 404, "not_found")


def test_non_uuid_item_id_is_404(client):
    assert_envelope(client.get("/items/not-a-uuid"), 404, "not_found")


def test_unknown_path_is_404_envelope(client):
    body = assert_envelope(client.get("/nowhere"), 404, "not_found")
    assert "/nowhere" in body["detail"]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_on_items_are_405_with_allow(client, method):
    response = getattr(client, method)("/items", data="{}", content_type="application/json")
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]


def test_healthz_touches_nothing_and_says_ok(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_post_to_healthz_is_405_envelope(client):
    assert_envelope(client.post("/healthz"), 405, "method_not_allowed")


def test_readyz_checks_each_configured_dependency_with_latency(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "state"}  # no broker in the embedded default
    for check in body["checks"].values():
        assert check["ok"] is True
        assert check["latency_ms"] >= 0


def test_schema_is_openapi_3_with_the_items_paths(client):
    response = client.get("/schema", headers={"Accept": "application/json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/items", "/items/{item_id}"} <= set(schema["paths"])


def test_docs_ui_assets_are_served_locally(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.content.decode()
    # Nothing from another host (a CDN): no absolute or protocol-relative URL at all. Not a search for "cdn":
    # the page carries a random token, which spelled it now and then.
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == []
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_metrics_count_requests_by_view_and_status(client):
    client.get("/items")
    text = client.get("/metrics").content.decode()
    assert "django_http_responses_total_by_status_view_method_total" in text
    assert 'view="items"' in text


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_utf8_named_in_any_spelling_is_accepted(client, charset):
    body = json.dumps({"name": "café"}, ensure_ascii=False).encode()
    response = client.generic("POST", "/items", body, content_type=f"application/json; charset={charset}")
    assert response.status_code == 202
    assert Item.objects.get().name == "café"


def _schema(client) -> dict:
    return client.get("/schema", headers={"Accept": "application/json"}).json()


def test_the_schema_says_next_is_null_on_the_last_page_and_bounds_limit(client):
    schema = _schema(client)
    page = schema["components"]["schemas"]["ItemPage"]["properties"]
    assert page["next"]["nullable"] is True
    (limit,) = [p for p in schema["paths"]["/items"]["get"]["parameters"] if p["name"] == "limit"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    name = schema["components"]["schemas"]["Input"]["properties"]["name"]
    assert (name["minLength"], name["maxLength"]) == (1, 200)


def test_the_schema_documents_every_error_each_operation_can_answer_and_the_idempotency_key(client):
    paths = _schema(client)["paths"]
    assert {"400", "406", "413", "429", "503"} <= set(paths["/items"]["get"]["responses"])
    assert {"400", "409", "413", "415", "422", "429", "503"} <= set(paths["/items"]["post"]["responses"])
    assert {"404", "429", "503"} <= set(paths["/items/{item_id}"]["get"]["responses"])
    headers = [p for p in paths["/items"]["post"]["parameters"] if p["in"] == "header"]
    assert [h["name"] for h in headers] == ["Idempotency-Key"]
