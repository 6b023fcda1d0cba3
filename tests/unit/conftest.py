"""Unit tests run on the embedded default: SQLite, local-memory cache, tasks executed in-process."""

import json

import pytest
from django.core.cache import caches


@pytest.fixture(autouse=True)
def _fresh_cache():
    for store in caches.all():
        store.clear()
    yield
    for store in caches.all():
        store.clear()


@pytest.fixture
def post_item(client):
    """POST /items with a JSON body (or raw bytes/str) and optional headers."""

    def post(body, *, path="/items", content_type="application/json", **headers):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False).encode()
        return client.post(path, data=data, content_type=content_type, headers=headers)

    return post
