"""loadtest.parsers on recorded real wrk and hey runs and a front Nginx's access log (fixtures/README.md says how)."""

from pathlib import Path

import pytest

from loadtest.parsers import ParseError, error_kind, parse_hey, parse_proxy_log, parse_report_line, parse_wrk

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- wrk ---------------------------------------------------------------------------------------------------


def test_wrk_default_output_of_the_design_notes_command_parses_without_a_lua_line():
    result = parse_wrk(recorded("wrk_get_default.txt"))

    assert result.tool == "wrk"
    assert result.requests == 1159
    assert result.duration_s == pytest.approx(5.10)
    assert result.rps == pytest.approx(1159 / 5.10)
    assert result.rps_reported == pytest.approx(227.24)
    assert result.latency_ms["mean"] == pytest.approx(411.21)
    assert result.latency_ms["max"] == pytest.approx(1020.0)
    # Without --latency and report.lua, wrk prints no percentiles and no status breakdown: say so, don't guess.
    assert result.latency_ms["p50"] is None
    assert result.latency_ms["p90"] is None
    assert result.statuses is None
    assert result.non_2xx_3xx == 0
    assert result.errors == {}
    assert result.bytes_read == round(0.86 * 1024 * 1024)


def test_wrk_report_lua_line_gives_exact_counts_p90_and_statuses():
    result = parse_wrk(recorded("wrk_get_report.txt"))

    assert result.requests == 63643
    assert result.duration_s == pytest.approx(5.029902)
    assert result.rps == pytest.approx(63643 / 5.029902)
    assert result.latency_ms["p50"] == pytest.approx(6.853)
    assert result.latency_ms["p90"] == pytest.approx(14.893)
    assert result.latency_ms["p99"] == pytest.approx(101.775)
    assert result.latency_ms["max"] == pytest.approx(252.072)
    assert result.statuses == {"200": 63643}
    assert result.bytes_read == 201366594
    assert result.unanswered == 0
    assert result.sent is None  # report.lua alone (GET) does not count sent requests


def test_wrk_human_percentiles_agree_with_the_lua_line():
    text = recorded("wrk_mixed_report.txt")
    without_lua = "\n".join(line for line in text.splitlines() if not line.startswith("LOADTEST_RESULT"))

    human, exact = parse_wrk(without_lua), parse_wrk(text)

    assert human.latency_ms["p50"] == pytest.approx(218.82)
    assert human.latency_ms["p90"] == pytest.approx(294.41)
    assert human.latency_ms["p99"] == pytest.approx(374.42)
    for key in ("p50", "p90", "p99"):
        assert human.latency_ms[key] == pytest.approx(exact.latency_ms[key], abs=0.01)
    assert human.requests == exact.requests == 1058


def test_wrk_mixed_counts_accepted_writes_and_requests_left_in_flight():
    result = parse_wrk(recorded("wrk_mixed_report.txt"))

    assert result.statuses == {"200": 953, "202": 105}
    assert result.accepted == 105
    assert result.sent == 1109
    # wrk stops at its deadline without reading what is in flight: those requests got no answer.
    assert result.unanswered == 1109 - 1058


def test_wrk_scripts_count_writes_so_in_flight_writes_are_bounded():
    result = parse_wrk(recorded("wrk_mixed_inflight.txt"))

    assert result.statuses == {"200": 533, "202": 59}
    assert result.sent == 693
    assert result.writes_sent == 69
    assert result.unanswered == 693 - 592
    assert result.unanswered_writes == 69 - 59
    # Recorded before report.lua counted writes: every unanswered request may have been a write.
    assert parse_wrk(recorded("wrk_mixed_report.txt")).unanswered_writes == 1109 - 1058


def test_wrk_run_with_rate_limits_timeouts_and_a_dead_server():
    result = parse_wrk(recorded("wrk_post_errors.txt"))

    assert result.statuses == {"202": 300, "429": 737}
    assert result.accepted == 300
    assert result.non_2xx_3xx == 737  # wrk's "Non-2xx or 3xx responses" line agrees
    assert "Non-2xx or 3xx responses: 737" in recorded("wrk_post_errors.txt")
    assert result.errors == {"read": 9, "write": 91328, "timeout": 802}
    assert result.requests == 1037
    assert result.unanswered == 92375 - 1037


def test_wrk_socket_errors_parse_from_the_human_summary_too():
    text = "\n".join(line for line in recorded("wrk_post_errors.txt").splitlines() if "LOADTEST_RESULT" not in line)

    result = parse_wrk(text)

    assert result.errors == {"read": 9, "write": 91328, "timeout": 802}
    assert result.non_2xx_3xx == 737
    assert result.statuses is None
    assert result.unanswered == 9 + 91328 + 802


def test_wrk_usage_message_is_not_a_result():
    with pytest.raises(ParseError):
        parse_wrk("Usage: wrk <options> <url>\n  Options:\n    -c, --connections <N>  Connections to keep open\n")


def test_malformed_lua_line_is_an_error_not_a_silent_fallback():
    with pytest.raises(ParseError):
        parse_report_line("LOADTEST_RESULT {not json")


# --- hey ---------------------------------------------------------------------------------------------------


def test_hey_post_of_the_design_notes_command_counts_every_202():
    result = parse_hey(recorded("hey_post_202.txt"))

    assert result.tool == "hey"
    assert result.statuses == {"202": 1000}
    assert result.accepted == 1000
    assert result.requests == 1000
    assert result.duration_s == pytest.approx(5.9242)
    assert result.rps == pytest.approx(1000 / 5.9242)
    assert result.rps_reported == pytest.approx(168.8001)
    assert result.latency_ms == pytest.approx({"p50": 518.0, "p90": 704.6, "p99": 1424.1, "mean": 550.5, "max": 1831.9})
    assert result.errors == {}
    assert result.unanswered == 0
    assert result.non_2xx_3xx == 0


def test_hey_run_with_non_2xx_statuses_timeouts_and_refused_connections():
    result = parse_hey(recorded("hey_post_errors.txt"))

    assert result.statuses == {"202": 296, "429": 277}
    assert result.accepted == 296
    assert result.non_2xx_3xx == 277
    assert result.requests == 296 + 277
    assert result.errors == {
        'Post "http://127.0.0.1:18000/items": context deadline exceeded (Client.Timeout exceeded while awaiting '
        "headers)": 4,
        'Post "http://127.0.0.1:18000/items": dial tcp 127.0.0.1:18000: connect: connection refused': 1423,
    }
    assert result.unanswered == 1427
    assert result.sent == 2000  # hey -n 2000: every request is either answered or an error
    # hey's own Requests/sec divides all 2000 by the total time; ours counts answers only, as wrk does.
    assert result.rps_reported == pytest.approx(595.7145)
    assert result.rps == pytest.approx(573 / 3.3573)
    assert result.latency_ms["p99"] == pytest.approx(737.1)


def test_hey_error_messages_group_into_stable_kinds():
    kinds = {error_kind(message) for message in parse_hey(recorded("hey_post_errors.txt")).errors}

    assert kinds == {"timeout", "connection refused"}


def test_hey_get_reports_bytes_read():
    result = parse_hey(recorded("hey_get_200.txt"))

    assert result.statuses == {"200": 3000}
    assert result.bytes_read == 9066000
    assert result.accepted == 0


def test_hey_usage_message_is_not_a_result():
    with pytest.raises(ParseError):
        parse_hey("Usage: hey [options...] <url>\n\nOptions:\n  -n  Number of requests to run.\n")


def test_every_result_serialises_with_its_accepted_count():
    as_dict = parse_hey(recorded("hey_post_202.txt")).to_dict()

    assert as_dict["accepted"] == 1000
    assert as_dict["statuses"] == {"202": 1000}


# --- the overload front's access log (loadtest/servers.py PROXY_LOG_FORMAT) ---------------------------------


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
