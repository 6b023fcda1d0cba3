"""The API behaves the same through the ASGI handler that gunicorn/uvicorn run."""

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_post_then_get_through_the_asgi_handler(async_client):
    accepted = await async_client.post("/items", {"name": "async"}, content_type="application/json")
    assert accepted.status_code == 202
    item = await async_client.get(accepted["Location"])
    assert item.status_code == 200
    assert item.json()["name"] == "async"


async def test_errors_keep_the_envelope_through_the_asgi_handler(async_client):
    response = await async_client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    too_big = await async_client.post("/items", "x" * 20_000, content_type="application/json")
    assert too_big.status_code == 413


async def test_healthz_and_readyz_through_the_asgi_handler(async_client):
    assert (await async_client.get("/healthz")).json() == {"status": "ok"}
    assert (await async_client.get("/readyz")).status_code == 200
