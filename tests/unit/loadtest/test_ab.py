"""The A/B report: medians over rounds, non-202 and 503 counts per run, CPU per request, ratios to the reference
server."""

from loadtest.ab import _markdown, _ratios, _summary, rotated
from loadtest.parsers import LoadResult


def _result(tool: str, statuses: dict[str, int], duration_s: float, p99: float, unanswered: int = 0) -> LoadResult:
    requests = sum(statuses.values())
    return LoadResult(
        tool=tool,
        requests=requests,
        duration_s=duration_s,
        rps=requests / duration_s,
        latency_ms={"p50": p99 / 2, "p90": p99, "p99": p99, "mean": p99 / 2, "max": p99},
        statuses=statuses,
        non_2xx_3xx=sum(n for s, n in statuses.items() if not s.startswith(("2", "3"))),
        unanswered=unanswered,
    )


def test_the_summary_takes_medians_and_counts_every_answer_that_is_not_a_202():
    posts = [
        _result("hey", {"202": 1000}, 1.0, 100),
        _result("hey", {"202": 900, "503": 100}, 1.0, 300),
        _result("hey", {"202": 800}, 2.0, 200, unanswered=3),
    ]
    gets = [_result("wrk", {"200": 500}, 1.0, 50), _result("wrk", {"200": 400, "503": 7}, 1.0, 70)]
    summary = _summary(posts, gets, [1.0, 0.9, 1.6], [1.0, 1.2])
    assert summary["post_accepted_per_s"] == 900  # of 1000, 900 and 400 per second
    assert summary["post_p99_ms"] == 200
    assert summary["post_non_202"] == [0, 100, 3]
    assert summary["get_2xx_per_s"] == 450 and summary["get_503"] == [0, 7]
    # CPU per accepted POST (1 ms, 1 ms, 2 ms) and per 2xx GET (2 ms, 3 ms); a 503 is not what was paid for
    assert summary["post_cpu_ms_runs"] == [1.0, 1.0, 2.0] and summary["post_cpu_ms"] == 1.0
    assert summary["get_cpu_ms_runs"] == [2.0, 3.0] and summary["get_cpu_ms"] == 2.5


def test_ratios_are_to_the_reference_and_the_table_names_every_server():
    fast = _summary([_result("hey", {"202": 900}, 1.0, 100)], [_result("wrk", {"200": 650}, 1.0, 50)], [0.9], [1.3])
    slow = _summary([_result("hey", {"202": 300}, 1.0, 400)], [_result("wrk", {"200": 500}, 1.0, 90)], [0.9], [1.5])
    assert _ratios(fast, slow) == {
        "post_accepted_per_s": 3.0,
        "get_2xx_per_s": 1.3,
        "post_accepted_per_s_by_round": 3.0,
        "get_2xx_per_s_by_round": 1.3,
        "post_cpu_ms": 3.0,  # 1 ms per POST against 3 ms
        "get_cpu_ms": 1.5,  # 2 ms per GET against 3 ms
    }
    report = {
        "rounds": 1,
        "post": "hey …",
        "get": "wrk …",
        "baseline_ref": "abc123",
        "servers": {"write-path": fast, "baseline": slow},
        "ratios_to": "baseline",
        "ratios": {"write-path": _ratios(fast, slow), "baseline": _ratios(slow, slow)},
        "lost_write_check": {"ok": True},
    }
    table = _markdown(report)
    assert "| write-path | 900.0 | 3.0 (3.0) |" in table and "| baseline | 300.0 | 1.0 (1.0) |" in table
    assert "| 1.0 (3.0) | 2.0 (1.5) |" in table  # the write path's CPU columns
    assert "Lost-write check: ok" in table


def test_the_by_round_ratio_is_the_median_of_each_rounds_own_ratio():
    def server(posts_per_s: list[int]) -> dict:
        posts = [_result("hey", {"202": n}, 1.0, 100) for n in posts_per_s]
        cpu = [0.1] * len(posts)
        return _summary(posts, [_result("wrk", {"200": 100}, 1.0, 50)] * len(posts), cpu, cpu)

    # A slow machine in round 2 hits both servers: each round's ratio is 3, whatever the medians say.
    assert _ratios(server([900, 300, 840]), server([300, 100, 280]))["post_accepted_per_s_by_round"] == 3.0


def test_each_round_starts_with_the_next_server():
    servers = ["write-path", "django-path", "baseline"]
    assert [rotated(servers, n)[0] for n in range(4)] == ["write-path", "django-path", "baseline", "write-path"]
    assert sorted(rotated(servers, 2)) == sorted(servers) and rotated([], 1) == []
