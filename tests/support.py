"""Helpers shared by every test directory: free ports, polling, and the error envelope a client sees."""

import contextlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest
import redis

T = TypeVar("T")

# The repository's root: where manage.py, deploy/ and README.md are.
REPO = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (all held open together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(condition: Callable[[], T | None], timeout_s: float, interval_s: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy; fail the test with the last value after timeout_s."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"condition not met within {timeout_s} s (last value: {value!r})")


def quiet_cache_version(redis_url: str) -> bytes | None:
    """The response cache's version once it has held still for a second: no worker batch in flight (earlier tests'
    POSTs still being stored would bump it, and a page built before a bump is rightly built again after it)."""
    from app.cache import VERSION_KEY  # here: app.cache needs Django's settings, which not every test directory has

    client = redis.Redis.from_url(redis_url)
    version, since = client.get(VERSION_KEY), time.monotonic()
    while time.monotonic() - since < 1.0:
        time.sleep(0.1)
        if (now := client.get(VERSION_KEY)) != version:
            version, since = now, time.monotonic()
    return cast(bytes | None, version)


def early_in_a_second() -> None:
    """Wait, if need be, until the wall clock is early in a second. The micro-cache's entries expire when a whole
    second ends (MICROCACHE_TTL_S, app/http.py), so a request pair started late in one could see MISS then
    STALE where it means to see MISS then HIT."""
    if time.time() % 1 > 0.5:
        time.sleep(1.02 - time.time() % 1)


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(response.content)
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) <= {"error", "detail", "fields"}
    return body


# CI (and a developer asking for it) must not pass by skipping what it cannot run.
TOOLS_REQUIRED = any(os.environ.get(name) in ("1", "true") for name in ("K8S_REQUIRED", "STACK_REQUIRED", "CI"))


def require(available: bool, what: str, *, needed_by: str) -> None:
    """Skip with the reason on a developer's machine; under CI (K8S_REQUIRED, STACK_REQUIRED or CI set) a
    missing tool is a failure."""
    if not available:
        message = f"{what}: `{needed_by}` needs it"
        if TOOLS_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def json_log_of(logger_name: str | None) -> Iterator[io.StringIO]:
    """What `logger_name` (None: the root) writes, formatted as production's handler does (LOG_FORMAT=json)."""
    from project import logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.RequestIdFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    level, logger.level = logger.level, min(logger.level or logging.INFO, logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.level = level
