"""A request uvicorn's own parser refuses is still answered in the envelope, by a real uvicorn server."""

import json
import socket
import threading
import time

import pytest
import uvicorn

from tests.support import free_ports


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def server_port():
    (port,) = free_ports(1)
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=port,
        http="project.asgi_stack.server_errors:EnvelopeHttpToolsProtocol",
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /items HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",  # a control byte in a header value
        b"GET /items?limit=\xd9\xa5 HTTP/1.1\r\nHost: x\r\n\r\n",  # a raw non-ASCII request target
        b"G@T /items HTTP/1.1\r\nHost: x\r\n\r\n",  # not a method token
    ],
)
def test_a_request_the_parser_refuses_is_a_400_envelope(server_port, request_bytes):
    answer = _raw(server_port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json; charset=utf-8" in head.lower()
    assert json.loads(body)["error"] == "bad_request"


def test_a_valid_request_is_served_as_usual(server_port):
    answer = _raw(server_port, b"GET /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nok\r\n" in answer


def test_requests_pipelined_on_one_connection_are_answered_whole_and_in_order(server_port):
    request = b"GET /items HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _raw(server_port, request * 3 + b"GET /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    responses = answer.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 4
    assert all(r.startswith(b"200 ") and r.endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n") for r in responses)  # chunked
