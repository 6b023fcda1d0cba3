"""The overload benchmark's own parts: the front's access-log parser (on a recorded log), the RSS summary and
the shedding on/off table built from them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtest.parsers import parse_proxy_log, parse_report_line
from loadtest.report import overload_comparison
from loadtest.runner import rss_summary
from loadtest.servers import PROXY_LOG_FORMAT, render_proxy_conf

FIXTURES = Path(__file__).parent / "fixtures" / "loadtest"


def test_the_front_access_log_gives_latency_by_status_and_splits_shed_503s_from_other_5xx():
    log = parse_proxy_log((FIXTURES / "nginx_front_overload_post.log").read_text())

    assert {status: v["count"] for status, v in log["by_status"].items()} == {
        "202": 40,
        "499": 5,
        "502": 5,
        "503": 20,
    }
    assert log["success"] == {
        "count": 40,
        "p50_ms": pytest.approx(332),
        "p90_ms": pytest.approx(528),
        "p99_ms": pytest.approx(698),
    }
    assert log["by_status"]["503"]["p50_ms"] == pytest.approx(651)
    assert log["shed"] == 20  # every 503 of the app carries Retry-After
    assert log["other_5xx"] == 5  # Nginx's 502s (a recycled worker reset its connections)
    assert log["client_closed"] == 5
    assert log["unparsed"] == 0


def test_a_503_without_retry_after_is_not_counted_as_shed_and_odd_lines_are_counted_not_dropped():
    text = (
        "1795324464.702 503 0.002 0.002 503 1\n"
        "1795324464.703 503 0.004 0.004 503 -\n"  # e.g. uvicorn's limit_concurrency: plain text, no Retry-After
        "1795324464.704 200 0.010 0.010 200 -\n"
        "garbage\n"
        "1795324464.705 200 notanumber 0.010 200 -\n"
    )
    log = parse_proxy_log(text)

    assert log["shed"] == 1
    assert log["other_5xx"] == 1
    assert log["by_status"]["503"] == {
        "count": 2,
        "p50_ms": pytest.approx(2),
        "p90_ms": pytest.approx(4),
        "p99_ms": pytest.approx(4),
    }
    assert log["success"]["count"] == 1
    assert log["unparsed"] == 2


def test_rss_that_stays_level_is_flat_and_rss_that_climbs_is_not():
    mib = 1024 * 1024
    level = rss_summary([(t, (180 + t % 2) * mib) for t in range(30)], workers_seen=2)
    climbing = rss_summary([(t, (180 + 3 * t) * mib) for t in range(30)], workers_seen=2)

    assert level["growth_pct"] < 1
    assert level["first_mib"] == 180 and level["peak_mib"] == 181
    assert climbing["growth_pct"] > 30
    assert rss_summary([(0, mib)], workers_seen=1) == {"samples": 1}


def _run(statuses: dict[str, int], success_p99: float, rejection_p50: float | None, growth: float) -> dict:
    by_status = {"200": {"count": 1, "p50_ms": 1, "p90_ms": 1, "p99_ms": success_p99}}
    if rejection_p50 is not None:
        by_status["503"] = {"count": 1, "p50_ms": rejection_p50, "p90_ms": 1, "p99_ms": 1}
    return {
        "result": {"statuses": statuses, "duration_s": 10.0},
        "by_status": {
            "by_status": by_status,
            "success": {"p99_ms": success_p99},
            "shed": 7,
            "other_5xx": 0,
            "client_closed": 1,
        },
        "rss": {"peak_mib": 200.0, "growth_pct": growth},
    }


def test_each_overload_row_is_compared_with_the_peak_of_its_own_server():
    scenarios = {
        "peak-get": {"runs": [_run({"200": 1000}, 300, None, 0)]},
        "peak-get-noshed": {"runs": [_run({"200": 800}, 320, None, 0)]},
        "overload": {"runs": [_run({"200": 950, "503": 5000}, 600, 3.0, 2.0)], "statuses_total": {"200": 950}},
        "overload-noshed": {"runs": [_run({"200": 600}, 6400, None, 25.0)], "errors_total": {"timeout": 4}},
    }
    on, off = overload_comparison(scenarios)

    assert (on["scenario"], on["peak_scenario"], on["shedding"]) == ("overload", "peak-get", "on")
    assert on["goodput_of_peak"] == pytest.approx(0.95)
    assert on["p99_of_peak"] == pytest.approx(2.0)
    assert on["median_rejection_ms"] == 3.0
    assert on["rss_flat"] is True
    assert off["goodput_of_peak"] == pytest.approx(0.75)  # against 80 2xx/s, its own peak, not shedding-on's
    assert off["p99_of_peak"] == pytest.approx(20.0)
    assert off["median_rejection_ms"] is None
    assert off["timeouts"] == 4
    assert off["rss_flat"] is False


@pytest.mark.parametrize("limit_conn", [0, 200])
def test_the_front_config_logs_what_the_parser_reads_and_sheds_at_nginx_only_when_asked(tmp_path, limit_conn):
    conf = render_proxy_conf(tmp_path, port=18080, upstream_port=18000, limit_conn=limit_conn)

    assert f"log_format loadtest '{PROXY_LOG_FORMAT}'" in conf
    assert 'proxy_set_header X-Request-Start "t=${msec}"' in conf  # the shedder's queue-time budget applies
    assert "proxy_cache" not in conf and "limit_req" not in conf  # every GET reaches the app
    assert ("limit_conn inflight 200;" in conf) is bool(limit_conn)
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin")
    if nginx:  # the rendered file is one Nginx accepts (the tool would fail at start otherwise)
        (tmp_path / "tmp").mkdir()
        (tmp_path / "nginx.conf").write_text(conf)
        checked = subprocess.run(
            [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "e.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr


def test_the_backoff_client_waits_as_long_as_retry_after_says_where_plain_wrk_re_sends_at_once(tmp_path):
    wrk = shutil.which("wrk")
    if not wrk:
        # `make test` needs only Python; CI (STACK_REQUIRED=1, after make system-deps) must run this one.
        if os.environ.get("STACK_REQUIRED") == "1":
            pytest.fail("wrk not installed (make system-deps) and STACK_REQUIRED=1", pytrace=False)
        pytest.skip("wrk not installed (make system-deps)")
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
    scripts = Path(__file__).parents[2] / "loadtest" / "scripts"
    try:
        counts = {}
        for script in ("report.lua", "backoff.lua"):
            out = subprocess.run(
                [wrk, "-t1", "-c2", "-d2s", "-s", str(scripts / script), url],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            counts[script] = parse_report_line(out)["statuses"]["503"]
    finally:
        server.shutdown()

    # 2 connections told to wait 1 s: about 2 answers each in 2 s; without the wait, as many as the server manages.
    assert counts["backoff.lua"] <= 6
    assert counts["report.lua"] > 50


def test_ratios_pair_each_overload_run_with_the_peak_of_its_own_round():
    # The machine ran at half speed in round 2: peak and overload alike. Each round kept 0.9 of its peak; the
    # median of the goodputs over the median of the peaks (450 / 1000) would have said 0.45.
    def run(n: int, ok_per_s: int, p99: float) -> dict:
        return {"run": n, **_run({"200": ok_per_s * 10}, p99, 3.0, 0)}

    scenarios = {
        "peak-get": {"runs": [run(1, 1000, 100), run(2, 500, 200), run(3, 1000, 100)]},
        "overload": {"runs": [run(1, 900, 200), run(2, 450, 400), run(3, 450, 200)]},
    }
    (row,) = overload_comparison(scenarios)
    assert row["goodput_of_peak"] == pytest.approx(0.9)  # rounds: 0.9, 0.9, 0.45
    assert row["p99_of_peak"] == pytest.approx(2.0)
    assert row["goodput_rps"] == 450 and row["peak_rps"] == 1000  # the columns stay medians over runs
