"""The preparation before the runs: targets, the captured body, what is skipped and why."""

import http.server
import threading

import pytest

from loadtest import cli, setup
from loadtest.runner import Progress
from loadtest.servers import Server


def test_allowlist_covering_loopback_is_recognised():
    assert setup._allowlisted("10.0.0.0/8, 127.0.0.1/32")
    assert setup._allowlisted("127.0.0.0/8")
    assert not setup._allowlisted("")
    assert not setup._allowlisted("10.0.0.0/8,not-a-cidr")


@pytest.fixture
def items_url():
    class Items(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"items":[]}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Items)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_away_from_the_native_stack_its_helper_gunicorns_are_skipped_and_the_lost_write_check_says_why(
    items_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("STACK_DIR", str(tmp_path / "no-stack"))
    args = cli.build_parser().parse_args(
        ["--base-url", items_url + "/", "--app-url", items_url, "--scenarios", "get-app-hit,get-app-miss,peak-post"]
    )
    servers: list[Server] = []

    prepared = setup.prepare(args, cli.make_plan(args), tmp_path, Progress(), servers)

    assert servers == []
    assert prepared.urls == {"base": items_url, "app": items_url}
    assert (tmp_path / "items.json").read_bytes() == prepared.body == b'{"items":[]}'
    assert prepared.skipped == {
        "get-app-miss": "needs the native stack's environment (.stack/env) for its second gunicorn",
        "peak-post": "needs the native stack's environment (.stack/env) for its second gunicorn",
    }
    assert prepared.row_counter is None
    assert prepared.warnings == [
        "lost-write check NOT RUN: no database to count rows in: pass --database-url postgres://… (PostgreSQL itself)"
    ]


def test_a_base_url_that_is_not_plain_http_is_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_DIR", str(tmp_path / "no-stack"))
    args = cli.build_parser().parse_args(["--base-url", "ftp://127.0.0.1:1", "--scenarios", "get-nginx-hit"])

    with pytest.raises(setup.Fatal, match=r"expected http://host:port"):
        setup.prepare(args, cli.make_plan(args), tmp_path, Progress(), [])
