"""Every ugly input answers its status from README.md's error table, in the envelope; never a 500, never a redirect."""

import json

import pytest

from app.models import Item
from tests.support import assert_envelope

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _nothing_is_stored():
    yield
    assert Item.objects.count() == 0, "a rejected request stored a row"


@pytest.mark.parametrize("raw", [b"{bad", b'{"name": "x",}', b"", b"\xff\xfe not utf-8", b'{"name": "x"} trailing'])
def test_malformed_json_is_400(post_item, raw):
    response = post_item(raw)
    if raw == b"":
        assert_envelope(response, 400, "invalid")  # an empty body is an object with no name
    else:
        assert_envelope(response, 400, "malformed_json")


@pytest.mark.parametrize("raw", [b"[]", b'[{"name": "x"}]', b'"a string"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_400(post_item, raw):
    body = assert_envelope(post_item(raw), 400, "invalid")
    assert "JSON object" in body["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_a_body_that_is_not_json_is_415(post_item, content_type):
    assert_envelope(post_item(b'{"name": "x"}', content_type=content_type), 415, "unsupported_media_type")


def test_a_body_over_16_kib_is_413(post_item):
    body = assert_envelope(post_item({"name": "x", "description": "y" * 17 * 1024}), 413, "payload_too_large")
    assert "16384" in body["detail"]


def test_a_non_numeric_content_length_is_400(client):
    response = client.generic("POST", "/items", b'{"name":"x"}', content_type="application/json", CONTENT_LENGTH="ten")
    assert_envelope(response, 400, "bad_request")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"description": "no name"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"name": 1.5}, "name"),
        ({"name": True}, "name"),
        ({"name": None}, "name"),
        ({"name": ["x"]}, "name"),
        ({"name": {"x": 1}}, "name"),
        ({"name": "nul\u0000byte"}, "name"),
        ({"name": "x", "description": "d" * 2001}, "description"),
        ({"name": "x", "description": 7}, "description"),
        ({"name": "x", "description": None}, "description"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(post_item, payload, field):
    body = assert_envelope(post_item(payload), 400, "invalid")
    assert list(body["fields"]) == [field]
    assert all(isinstance(message, str) for message in body["fields"][field])


def test_a_lone_surrogate_is_400_not_a_poison_message(post_item):
    body = assert_envelope(post_item(b'{"name": "bad \\ud800 text"}'), 400, "invalid")
    assert "name" in body["fields"]


def test_both_fields_wrong_are_reported_together(post_item):
    body = assert_envelope(post_item({"name": "", "description": "d" * 2001}), 400, "invalid")
    assert set(body["fields"]) == {"name", "description"}


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5", "", "9" * 50, "²", "٣", " 5", "0x10"])
def test_bad_limit_is_400(client, limit):
    body = assert_envelope(client.get("/items", {"limit": limit}), 400, "invalid_parameter")
    assert "limit" in body["detail"]


@pytest.mark.parametrize("cursor", ["abc", "", "x" * 500, "00000000000000000000000000000000:forged"])
def test_tampered_cursor_is_400(client, cursor):
    assert_envelope(client.get("/items", {"cursor": cursor}), 400, "invalid_parameter")


def test_a_real_cursor_with_one_character_changed_is_400(client):
    Item.objects.bulk_create(
        Item(id=f"00000000-0000-7000-8000-00000000000{n}", name=str(n), created_at="2026-01-01T00:00:00Z")
        for n in range(3)
    )
    cursor = client.get("/items?limit=1").json()["next"].split("cursor=")[1]
    tampered = ("0" if cursor[5] != "0" else "1").join([cursor[:5], cursor[6:]])
    assert_envelope(client.get("/items", {"cursor": tampered}), 400, "invalid_parameter")
    Item.objects.all().delete()


# "dup-a,dup-b" is what two Idempotency-Key headers become once joined.
@pytest.mark.parametrize("key", ["k" * 256, "naïve-ключ", "tab\tkey", "dup-a,dup-b"])
def test_bad_idempotency_key_is_400(post_item, key):
    response = post_item({"name": "x"}, **{"Idempotency-Key": key})
    assert_envelope(response, 400, "invalid_parameter")


def test_a_huge_query_string_is_still_an_answer(client):
    assert client.get("/items", {"limit": "1" * 5000}).status_code == 400


def test_an_unknown_extra_field_is_ignored(post_item):
    response = post_item({"name": "x", "colour": "red"})
    assert response.status_code == 202
    Item.objects.all().delete()


def test_accept_header_asking_for_xml_is_406(client):
    assert_envelope(client.get("/items", headers={"Accept": "application/xml"}), 406, "not_acceptable")


def test_deeply_nested_json_is_a_clean_400(post_item):
    raw = ("[" * 100_000 + "]" * 100_000).encode()
    # 200 KB is over the body limit: 413 before any parser recurses into it.
    assert_envelope(post_item(raw), 413, "payload_too_large")
    nested = json.dumps({"name": {"a": [[[[[[1]]]]]]}})
    assert_envelope(post_item(nested), 400, "invalid")


def test_json_nested_too_deeply_within_the_size_limit_is_a_400_not_a_500(post_item):
    body = assert_envelope(post_item(("[" * 8000 + "]" * 8000).encode()), 400, "malformed_json")
    assert "nests too deeply" in body["detail"]


def test_a_chunked_body_over_16_kib_is_413():
    import io

    from django.core.handlers.asgi import ASGIRequest

    from project.middleware.body_limit import body_error

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/items",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }
    request = ASGIRequest(scope, io.BytesIO(b"x" * 20_000))
    assert_envelope(body_error(request, 16 * 1024), 413, "payload_too_large")


@pytest.mark.parametrize("path", ["/docs", "/docs/", "/schema"])
def test_options_on_the_docs_and_schema_is_a_405_not_a_500(client, path):
    response = client.options(path)
    assert_envelope(response, 405, "method_not_allowed")
    assert "OPTIONS" not in response["Allow"]


@pytest.mark.parametrize("method", ["put", "delete", "patch", "post"])
@pytest.mark.parametrize("path", ["/metrics", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css"])
def test_metrics_and_static_files_answer_only_get_and_head(client, method, path):
    response = getattr(client, method)(path)
    assert_envelope(response, 405, "method_not_allowed")
    assert client.head(path).status_code == 200


@pytest.mark.parametrize("charset", ["latin-1", "utf-7", "unicode_escape", "bz2", "utf-16"])
def test_a_body_in_any_charset_but_utf8_is_415_and_stores_nothing(client, charset):
    body = json.dumps({"name": "café"}, ensure_ascii=False).encode()  # generic(): sent as is, not re-encoded
    response = client.generic("POST", "/items", body, content_type=f"application/json; charset={charset}")
    assert_envelope(response, 415, "unsupported_media_type")
    assert Item.objects.count() == 0


def test_the_dependency_range_excludes_the_drf_releases_that_decompress_bodies():
    import tomllib

    from tests.support import REPO

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    drf = next(d for d in dependencies if d.startswith("djangorestframework"))
    assert drf.startswith("djangorestframework>=3.18.3")
