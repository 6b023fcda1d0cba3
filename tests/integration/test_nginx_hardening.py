"""Nginx under hostile input (review 2026-12, issue 17): /metrics private under every spelling, every method and
path rate-limited, every error Nginx makes in the envelope, a micro-cache that cannot be poisoned or busted, no
retried POST, and the forwarded scheme and client address believed only from a trusted TLS terminator.

Most tests talk to the native stack's Nginx. The last ones need an upstream that misbehaves on demand or reports
what it received, so they start a second Nginx from the same rendered config (deploy.stack.prepare) in front of a
small fake upstream."""

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from deploy.stack import prepare
from deploy.stack.binaries import find_all
from deploy.stack.config import Config
from tests.support import early_in_a_second, free_ports, wait_until

pytestmark = pytest.mark.integration

JSON = "application/json; charset=utf-8"


# --- Helpers --------------------------------------------------------------------------------------------------


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def raw_request(port: int, request: bytes, *, source: str = "127.0.0.1", timeout_s: float = 10) -> Raw:
    """Send bytes exactly as given (no client library normalising them) and read the answer until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s, source_address=(source, 0)) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Raw(int(status_line.split()[1]), headers, body)


def get_raw(port: int, target: str, *, method: str = "GET", source: str = "127.0.0.1", extra: str = "") -> Raw:
    return raw_request(
        port,
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode(),
        source=source,
    )


def http_port(stack) -> int:
    return urlsplit(stack.base_url).port


def client_from(stack, address: str) -> httpx.Client:
    """A client connecting from another loopback address: its own rate-limit buckets, outside the test allow-list
    (127.0.0.1/32) and outside /metrics's loopback address."""
    return httpx.Client(base_url=stack.base_url, transport=httpx.HTTPTransport(local_address=address), timeout=10)


def answered_by_nginx(headers) -> bool:
    # Every app response carries Django's security headers; an answer Nginx makes itself has none.
    return "x-content-type-options" not in headers


def assert_nginx_envelope(response: httpx.Response, status: int, code: str) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert response.headers["content-type"] == JSON
    assert set(body) == {"error", "detail"} and body["error"] == code and body["detail"], body
    assert answered_by_nginx(response.headers)
    return body


def fresh_page(stack) -> str:
    """A canonical page URL (limit and cursor, as the app's `next` links are) that no request has used yet, so
    its first GET through Nginx is a micro-cache MISS: a page that starts below an item stored just now."""
    httpx.post(f"{stack.web_url}/items", json={"name": "below the fresh page"})  # so the page has a `next`
    item_id = httpx.post(f"{stack.web_url}/items", json={"name": "fresh page"}).json()["id"]

    def newest_page() -> dict | None:
        page = httpx.get(f"{stack.web_url}/items?limit=1").json()
        return page if page["results"] and page["results"][0]["id"] == item_id else None

    cursor = urlsplit(wait_until(newest_page, timeout_s=30, interval_s=0.05)["next"]).query.split("cursor=")[1]
    return f"/items?limit=7&cursor={cursor}"


# --- H1: /metrics private under every spelling; L8: GET and HEAD only -----------------------------------------


METRICS_SPELLINGS = [
    "/metrics",
    "/metrics/",
    "/metrics%2F",
    "/metrics/?x=1",
    "/metrics?x=1",
    "//metrics",
    "/%6detrics/",
    "/metrics/.",
]


def test_metrics_is_a_404_envelope_to_the_public_under_every_spelling(stack):
    for target in METRICS_SPELLINGS:
        response = get_raw(http_port(stack), target, source="127.0.0.3")

        assert response.status == 404, (target, response.body[:200])
        assert response.headers["content-type"] == JSON, target
        assert response.json() == {"error": "not_found", "detail": "Not found."}, target
        assert answered_by_nginx(response.headers), target


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_metrics_answers_only_get_and_head_to_loopback_and_the_405_envelope_from_nginx_otherwise(stack, method):
    response = httpx.request(method, f"{stack.base_url}/metrics/")

    assert_nginx_envelope(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"
    assert httpx.head(f"{stack.base_url}/metrics").status_code == 200
    served = httpx.get(f"{stack.base_url}/metrics/")
    assert served.status_code == 200
    assert "django_http_requests_total_by_method_total" in served.text


# --- M4/M5: every method and path counted in one of the two rate-limit zones ----------------------------------


@pytest.mark.parametrize(
    ("address", "method", "path"),
    [
        ("127.0.17.1", "OPTIONS", "/items"),
        ("127.0.17.2", "OPTIONS", "/docs"),
        ("127.0.17.5", "DELETE", "/readyz"),
    ],
)
def test_methods_other_than_get_and_head_meet_the_write_limit(stack, address, method, path):
    with client_from(stack, address) as client:
        responses = [client.request(method, path) for _ in range(20)]  # the write zone: 5 r/s, burst 5

    limited = [r for r in responses if r.status_code == 429]
    assert limited, [r.status_code for r in responses]
    assert_nginx_envelope(limited[0], 429, "rate_limited")
    assert limited[0].headers["retry-after"] == "1"


def test_readyz_meets_the_read_limit(stack):
    def one(client: httpx.Client) -> int:
        return client.get("/readyz").status_code

    with client_from(stack, "127.0.17.6") as client, concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: one(client), range(60)))  # the read zone: 10 r/s, burst 20

    assert 429 in statuses, statuses
    assert set(statuses) <= {200, 429}, statuses


def test_healthz_is_never_rate_limited_for_get_and_head_but_other_methods_are(stack):
    with client_from(stack, "127.0.17.7") as client, concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = set(
            pool.map(lambda n: client.request("GET" if n % 2 else "HEAD", "/healthz").status_code, range(80))
        )
        others = [client.post("/healthz").status_code for _ in range(20)]

    assert statuses == {200}  # liveness probes are never turned away
    assert 429 in others, others


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "M-SEARCH"])
def test_a_method_nginx_does_not_proxy_is_the_405_envelope_naming_the_methods_served(stack, method):
    response = get_raw(http_port(stack), "/items", method=method)

    assert response.status == 405, response.body[:200]
    assert response.headers["content-type"] == JSON
    assert response.json()["error"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert answered_by_nginx(response.headers)


# --- L1: every error Nginx makes, in the envelope ----------------------------------------------------------------

BAD_REQUESTS = {
    "no Host": (b"GET /items HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    "two words in Host": (b"GET /items HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    "not a method": (b"G@T /items HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    "Content-Length not a number": (
        b"POST /items HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        400,
        "bad_request",
    ),
    "Content-Length and chunked": (
        b"POST /items HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "a header over 8 KiB": (
        b"GET /items HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\nConnection: close\r\n\r\n",
        431,
        "request_header_too_large",
    ),
    "40 KiB of headers": (
        b"GET /items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (n, b"a" * 4000) for n in range(10))
        + b"Connection: close\r\n\r\n",
        431,
        "request_header_too_large",
    ),
    "a URI over 8 KiB": (
        b"GET /items?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        414,
        "uri_too_long",
    ),
    "TRACE": (b"TRACE /items HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
    "Transfer-Encoding gzip": (
        b"POST /items HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n",
        501,
        "not_implemented",
    ),
    "HTTP/3.0": (
        b"GET /items HTTP/3.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        505,
        "http_version_not_supported",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_every_error_nginx_makes_itself_is_the_json_envelope(stack, case):
    request, status, code = BAD_REQUESTS[case]

    response = raw_request(http_port(stack), request)

    assert response.status == status, response.body[:300]
    assert response.headers["content-type"] == JSON, response.body[:300]
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code and body["detail"], body
    assert answered_by_nginx(response.headers)


def test_a_raw_byte_in_the_request_target_is_refused_by_nginx_before_the_app(stack):
    # uvicorn refuses it too (in the envelope since issue 17), but it need not reach the app at all.
    response = raw_request(
        http_port(stack), b"GET /items?limit=\xd9\xa5 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )

    assert response.status == 400
    assert response.headers["content-type"] == JSON
    assert response.json() == {"error": "bad_request", "detail": "The request target must be ASCII without controls."}


# --- L2 and R7: the micro-cache answers only what it may answer -------------------------------------------------


def test_a_client_that_does_not_accept_json_is_never_answered_from_the_micro_cache(stack):
    url = fresh_page(stack)
    early_in_a_second()
    with httpx.Client(base_url=stack.base_url, timeout=10) as api:
        first = api.get(url)
        second = api.get(url)
        as_json = api.get(url, headers={"Accept": "application/json"})
        html = api.get(url, headers={"Accept": "text/html"})
        refused = api.get(url, headers={"Accept": "application/json;q=0"})

    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("MISS", "HIT")
    assert as_json.headers["x-cache-status"] == "HIT"  # the usual Accept values share one entry
    assert html.headers["x-cache-status"] == "BYPASS"  # the app decides (406), never a cached 200
    assert refused.headers["x-cache-status"] == "BYPASS"


def test_unknown_or_repeated_query_parameters_bypass_the_micro_cache(stack):
    url = fresh_page(stack)
    junk = f"{url}&z={uuid.uuid4().hex}"
    early_in_a_second()
    with httpx.Client(base_url=stack.base_url, timeout=10) as api:
        statuses = [api.get(junk).headers["x-cache-status"] for _ in range(2)]
        repeated = [api.get(f"{url}&limit=8").headers["x-cache-status"] for _ in range(2)]
        canonical = [api.get(url).headers["x-cache-status"] for _ in range(2)]

    assert statuses == ["BYPASS", "BYPASS"]  # no entry per junk value: the cache cannot be filled or evicted so
    assert repeated == ["BYPASS", "BYPASS"]  # never a key that reads as one limit while the app obeys another
    assert canonical == ["MISS", "HIT"]


def test_a_long_query_string_that_bypasses_the_micro_cache_is_answered_by_the_app_through_the_cache_layer(stack):
    """Nginx writes the cache key into the buffer of the app's response headers even for an answer it will not
    cache. With the default 4 KiB, a query string of ~3.3-3.4 KiB left no room for the headers (502 "upstream
    sent too big header", found by the fuzzer), and a longer one turned the cache off for the request (no
    X-Cache-Status, an error logged). Every length up to Nginx's 8 KiB request line must be a plain BYPASS."""
    answers = {}
    with httpx.Client(base_url=stack.base_url, timeout=10) as api:
        for length in [*range(2_800, 4_400, 50), 5_000, 7_500, 8_000]:
            response = api.get(f"/items?z={'a' * length}")
            answers[length] = (response.status_code, response.headers.get("x-cache-status"))
    wrong = {length: answer for length, answer in answers.items() if answer != (200, "BYPASS")}
    assert not wrong, wrong


# --- R1 and M3: a second Nginx from the same config, in front of a fake upstream --------------------------------


@dataclass
class Upstream:
    """Records every request; /drop reads it and closes the connection without answering (a worker that died
    mid-request); anything else answers 200 with the headers it received as JSON."""

    port: int
    received: list[tuple[str, str, dict]] = field(default_factory=list)


def _fake_upstream() -> tuple[Upstream, ThreadingHTTPServer]:
    upstream = Upstream(port=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            upstream.received.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            if self.path.startswith("/drop"):
                self.close_connection = True
                return
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    upstream.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return upstream, server


@dataclass
class LoneNginx:
    port: int
    upstream: Upstream


@pytest.fixture
def lone_nginx() -> Iterator:
    """A factory: Nginx rendered by deploy.stack.prepare exactly as for the native stack (with the environment
    given), its upstream the fake one. Each Nginx started is stopped by its pid."""
    # Not under pytest's tmp dir (mode 0700): when we are root, Nginx's workers run as another user.
    tmp_path = Path(tempfile.mkdtemp(prefix="items-nginx-"))
    tmp_path.chmod(0o755)
    nginx = find_all(None, os.environ).get("nginx")
    assert nginx, "nginx is not installed"
    started: list[tuple[subprocess.Popen, ThreadingHTTPServer]] = []

    def start(**environ: str) -> LoneNginx:
        upstream, server = _fake_upstream()
        (http_,) = free_ports(1)
        stack_dir = tmp_path / f"nginx-{len(started)}"
        cfg = Config.from_environ(
            {
                "STACK_DIR": str(stack_dir),
                "STACK_HTTP_PORT": str(http_),
                "STACK_WEB_PORT": str(upstream.port),
                "RATELIMIT_ALLOWLIST": "",
                **environ,
            },
            binaries={"nginx": nginx},
        )
        prepare.render_config(cfg)
        (cfg.data / "nginx").mkdir(parents=True, exist_ok=True)
        globals_ = f"daemon off; pid {cfg.data / 'nginx/nginx.pid'};"
        conf = str(cfg.conf / "nginx/nginx.conf")
        check = subprocess.run(
            [nginx, "-t", "-p", f"{cfg.data / 'nginx'}/", "-c", conf, "-e", "stderr", "-g", globals_],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        process = subprocess.Popen(
            [nginx, "-p", f"{cfg.data / 'nginx'}/", "-c", conf, "-e", "stderr", "-g", globals_],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append((process, server))

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", http_)) == 0

        wait_until(listening, timeout_s=10, interval_s=0.05)
        return LoneNginx(port=http_, upstream=upstream)

    yield start

    for process, server in started:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        server.shutdown()
        server.server_close()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_nginx_never_retries_a_post_whose_kept_connection_failed_but_still_retries_a_get(lone_nginx):
    # Nginx tries again only when a kept-alive upstream connection fails (as when gunicorn recycles a worker):
    # one client connection, so one Nginx worker, and a first answer that leaves a kept connection behind it.
    front = lone_nginx()
    with httpx.Client(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as client:
        assert client.get("/warm").status_code == 200
        post = client.post("/drop", json={"name": "once"})
        assert client.get("/warm").status_code == 200
        get = client.get("/drop")
    posts = [r for r in front.upstream.received if r[0] == "POST"]
    gets = [r for r in front.upstream.received if r[:2] == ("GET", "/drop")]

    assert post.status_code == 502
    assert post.json()["error"] == "bad_gateway"
    assert len(posts) == 1, posts  # the app may have accepted it: a second try could store it twice
    assert get.status_code == 502
    assert len(gets) == 2, gets  # a read is safe to try again on a fresh connection


def _seen(front: LoneNginx, *, source: str, forwarded_for: str = "203.0.113.7", proto: str = "https") -> dict:
    headers = {"X-Forwarded-Proto": proto, "X-Forwarded-For": forwarded_for}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(f"http://127.0.0.1:{front.port}/items?limit=1&echo={uuid.uuid4().hex}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_scheme_and_the_client_address_are_believed_only_from_a_trusted_tls_terminator(lone_nginx):
    default = lone_nginx()
    front = lone_nginx(NGINX_TRUSTED_FRONT="127.0.0.1/32")

    by_default = _seen(default, source="127.0.0.1")
    trusted = _seen(front, source="127.0.0.1", forwarded_for="198.51.100.1, 203.0.113.7")
    untrusted = _seen(front, source="127.0.0.2")
    nonsense = _seen(front, source="127.0.0.1", proto="gopher")
    outside_metrics = get_raw(front.port, "/metrics", extra="X-Forwarded-For: 203.0.113.7\r\n")

    # Default: nobody is trusted, Nginx's own scheme and the peer's address.
    assert by_default["x-forwarded-proto"] == "http"
    assert by_default["x-forwarded-for"] == by_default["x-real-ip"] == "127.0.0.1"
    assert trusted["x-forwarded-proto"] == "https"
    assert trusted["x-forwarded-for"] == trusted["x-real-ip"] == "203.0.113.7"  # the last address not trusted
    assert untrusted["x-forwarded-proto"] == "http"
    assert untrusted["x-forwarded-for"] == "127.0.0.2"
    assert nonsense["x-forwarded-proto"] == "http"
    # The terminator's own address no longer makes every client "loopback".
    assert outside_metrics.status == 404
    assert outside_metrics.json()["error"] == "not_found"
