"""The access log: one line per served request, from just inside the request id; none per shed request; a JSON
record with LOG_FORMAT=json."""

import json
import logging
import re
import time

import pytest

from project.asgi_stack.access_log import AccessLog
from project.asgi_stack.request_id import RequestId
from project.asgi_stack.shedding import LoadShedding
from tests.support import json_log_of


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
        await _get(RequestId(AccessLog(_ok)), **{"X-Request-ID": "abc", "X-Forwarded-For": "198.51.100.7"})
    (line,) = [r.getMessage() for r in caplog.records if r.name == "items.access"]
    assert line.startswith('127.0.0.1 xff=198.51.100.7 "GET /items?limit=5 HTTP/1.1" 200 2 ')
    assert line.endswith("ms rid=abc")


@pytest.mark.anyio
async def test_a_shed_request_gets_no_line(caplog):
    # A line per rejection costs a worker's CPU exactly under a retry storm; Nginx logs them, /metrics counts them.
    app = RequestId(AccessLog(LoadShedding(_ok)))
    with caplog.at_level(logging.INFO, logger="items.access"):
        await _get(app, **{"X-Request-Start": f"t={time.time() - 10:.3f}", "X-Request-ID": "shed"})
        await _get(app, **{"X-Request-ID": "served"})
    lines = [r.getMessage() for r in caplog.records if r.name == "items.access"]
    assert len(lines) == 1 and lines[0].endswith("rid=served")


def test_the_asgi_entry_point_puts_the_access_log_just_inside_the_request_id():
    import project.asgi

    wrappers = [w for w in project.asgi.PIPELINE if w is not None]
    assert wrappers[:2] == [RequestId, AccessLog]  # tracing is off here
    assert isinstance(project.asgi.application, RequestId)
    assert isinstance(project.asgi.application.app, AccessLog)


@pytest.mark.anyio
async def test_a_client_cannot_write_a_line_of_its_own_into_the_log(caplog):
    scope = {**_scope(**{"X-Request-ID": 'r"1\nFAKE'}), "path": '/nowhere\nINJECTED "POST /admin HTTP/1.1" 200'}

    async def send(message):
        pass

    with caplog.at_level(logging.INFO, logger="items.access"):
        await RequestId(AccessLog(_ok))(scope, None, send)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "items.access"]
    assert "\n" not in line
    assert '/nowhere\\nINJECTED \\"POST /admin HTTP/1.1\\" 200' in line
    assert re.search(r" rid=[0-9a-f]{32}$", line)  # an id with a newline is replaced, not logged


@pytest.fixture
def json_access_log(settings):
    """LOG_FORMAT=json, and the access logger's records formatted as production's handler does, into a string."""
    settings.LOG_FORMAT = "json"
    with json_log_of("items.access") as stream:
        yield stream


@pytest.mark.anyio
async def test_in_json_mode_the_access_record_is_one_json_line_with_its_fields(json_access_log):
    scope = {**_scope(**{"X-Request-ID": "rid-7", "X-Forwarded-For": "198.51.100.7"}), "path": "/items\nFAKE"}

    async def send(message):
        pass

    await RequestId(AccessLog(_ok))(scope, None, send)

    (line,) = json_access_log.getvalue().splitlines()  # the newline in the path is escaped by JSON
    record = json.loads(line)
    assert record["logger"] == "items.access" and record["level"] == "INFO" and record["time"]
    assert {k: record[k] for k in ("peer", "xff", "method", "path", "status", "bytes", "request_id")} == {
        "peer": "127.0.0.1",
        "xff": "198.51.100.7",
        "method": "GET",
        "path": "/items\nFAKE?limit=5",
        "status": 200,
        "bytes": 2,
        "request_id": "rid-7",
    }
    assert isinstance(record["duration_ms"], float)
