"""The access log: one line per served request, from the outermost wrapper; none per shed request."""

import logging
import time

import pytest

from project.asgi_stack.access_log import AccessLog
from project.asgi_stack.shedding import LoadShedding


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _scope(**headers: str) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "query_string": b"limit=5",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def _get(app, **headers: str) -> None:
    async def send(message):
        pass

    await app(_scope(**headers), None, send)


@pytest.mark.anyio
async def test_a_served_request_gets_one_line_with_status_bytes_duration_and_request_id(caplog):
    with caplog.at_level(logging.INFO, logger="items.access"):
        await _get(AccessLog(_ok), **{"X-Request-ID": "abc", "X-Forwarded-For": "198.51.100.7"})
    (line,) = [r.getMessage() for r in caplog.records if r.name == "items.access"]
    assert line.startswith('127.0.0.1 xff=198.51.100.7 "GET /items?limit=5 HTTP/1.1" 200 2 ')
    assert line.endswith("ms rid=abc")


@pytest.mark.anyio
async def test_a_shed_request_gets_no_line(caplog):
    # A line per rejection costs a worker's CPU exactly under a retry storm; Nginx logs them, /metrics counts them.
    app = AccessLog(LoadShedding(_ok))
    with caplog.at_level(logging.INFO, logger="items.access"):
        await _get(app, **{"X-Request-Start": f"t={time.time() - 10:.3f}", "X-Request-ID": "shed"})
        await _get(app, **{"X-Request-ID": "served"})
    lines = [r.getMessage() for r in caplog.records if r.name == "items.access"]
    assert len(lines) == 1 and lines[0].endswith("rid=served")


def test_the_asgi_entry_point_puts_the_access_log_outermost():
    import project.asgi

    wrappers = [w for w in project.asgi.PIPELINE if w is not None]
    assert wrappers[0] is AccessLog
    assert isinstance(project.asgi.application, AccessLog)


@pytest.mark.anyio
async def test_a_client_cannot_write_a_line_of_its_own_into_the_log(caplog):
    scope = {**_scope(**{"X-Request-ID": 'r"1\nFAKE'}), "path": '/nowhere\nINJECTED "POST /admin HTTP/1.1" 200'}

    async def send(message):
        pass

    with caplog.at_level(logging.INFO, logger="items.access"):
        await AccessLog(_ok)(scope, None, send)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "items.access"]
    assert "\n" not in line
    assert '/nowhere\\nINJECTED \\"POST /admin HTTP/1.1\\" 200' in line
    assert line.endswith('rid=r\\"1\\nFAKE')
