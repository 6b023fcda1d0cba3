"""The bare ASGI baseline app."""

import asyncio
import importlib
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def test_baseline_asgi_app_answers_the_captured_bytes(tmp_path, monkeypatch):
    body = (FIXTURES / "hey_get_200.txt").read_bytes()  # any bytes will do
    (tmp_path / "items.json").write_bytes(body)
    monkeypatch.setenv("LOADTEST_BODY_FILE", str(tmp_path / "items.json"))
    import loadtest.baseline_asgi as baseline

    baseline = importlib.reload(baseline)
    sent = []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(baseline.app({"type": "http", "method": "GET", "path": "/items"}, receive, send))

    assert sent[0]["status"] == 200
    assert (b"content-length", str(len(body)).encode()) in sent[0]["headers"]
    assert sent[1]["body"] == body
