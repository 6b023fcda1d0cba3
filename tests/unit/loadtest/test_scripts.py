"""The wrk Lua scripts in loadtest/scripts/: what they share, and the backoff client against a real wrk."""

import shutil
import subprocess

from loadtest.parsers import parse_report_line
from loadtest.scenarios import SCRIPTS
from tests import support


def test_the_backoff_client_counts_like_report_lua_and_waits_as_retry_after_says():
    text = (SCRIPTS / "backoff.lua").read_text()

    assert 'dofile(here .. "report.lua")' in text
    assert "function delay()" in text
    assert '"retry-after"' in text and "seconds * 1000" in text


def test_mixed_and_post_scripts_share_the_report_script():
    for name in ("post.lua", "mixed.lua"):
        text = (SCRIPTS / name).read_text()
        assert 'dofile(here .. "report.lua")' in text
        assert "loadtest_sent(" in text
    assert "LOADTEST_RESULT" in (SCRIPTS / "report.lua").read_text()


def test_the_backoff_client_waits_as_long_as_retry_after_says_where_plain_wrk_re_sends_at_once(tmp_path):
    wrk = shutil.which("wrk")
    # `make test` needs only Python; CI (STACK_REQUIRED=1, after make system-deps) must run this one.
    support.require(wrk is not None, "wrk (make system-deps)", needed_by="make loadtest")
    assert wrk is not None
    import http.server
    import threading

    class AlwaysOverloaded(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b'{"error":"overloaded"}'
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysOverloaded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/items"
    try:
        counts = {}
        for script in ("report.lua", "backoff.lua"):
            out = subprocess.run(
                [wrk, "-t1", "-c2", "-d2s", "-s", str(SCRIPTS / script), url],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            report = parse_report_line(out)
            assert report is not None, out
            counts[script] = report["statuses"]["503"]
    finally:
        server.shutdown()

    # 2 connections told to wait 1 s: about 2 answers each in 2 s; without the wait, as many as the server manages.
    assert counts["backoff.lua"] <= 6
    assert counts["report.lua"] > 50
