"""A results dict shaped like loadtest.cli.assemble's, built from recorded wrk and hey runs (fixtures/)."""

from pathlib import Path

from loadtest import report
from loadtest.lostwrite import lost_write_verdict
from loadtest.parsers import parse_hey, parse_wrk
from loadtest.runner import medians

FIXTURES = Path(__file__).parent / "fixtures"


def results_from_recordings(lost_write_case: tuple[int, int]) -> dict:
    """GET scenarios from recorded wrk runs, a POST run from hey with rows stored = rows_after - rows_before."""
    get_app = parse_wrk((FIXTURES / "wrk_mixed_report.txt").read_text()).to_dict()
    baseline = parse_wrk((FIXTURES / "wrk_get_report.txt").read_text()).to_dict()
    post = parse_hey((FIXTURES / "hey_post_lost.txt").read_text())
    rows_before, rows_after = lost_write_case
    verdict = lost_write_verdict(rows_before=rows_before, rows_after=rows_after, accepted=post.accepted)
    scenarios: dict[str, dict] = {
        "get-app-hit": {"summary": "app", "tool": "wrk", "connections": 100, "runs": [{"run": 1, "result": get_app}]},
        "baseline-asgi": {
            "summary": "asgi",
            "tool": "wrk",
            "connections": 100,
            "runs": [{"run": 1, "result": baseline}],
        },
        "post-accept": {
            "summary": "post",
            "tool": "hey",
            "connections": 100,
            "runs": [{"run": 1, "result": post.to_dict(), "lost_write": {"checked": True, **verdict.to_dict()}}],
        },
    }
    for entry in scenarios.values():
        entry["median"] = medians([run["result"] for run in entry["runs"]])
        entry["statuses_total"] = entry["runs"][0]["result"]["statuses"]
        entry["errors_total"] = {}
    checks = report.lost_write_checks(scenarios)
    return {
        "started_at": "20260101T000000Z",
        "elapsed_s": 1.0,
        "machine": {"cpu_count": 2},
        "versions": {"wrk": "4.1.0"},
        "config": {
            "smoke": False,
            "runs": 1,
            "wrk_threads": 2,
            "connections": 100,
            "duration_s": 15,
            "post_requests": 500,
            "overload_connections": 500,
            "overload_duration_s": 5,
            "base_url": "http://127.0.0.1:8080",
            "app_url": "http://127.0.0.1:58000",
            "gunicorn": {"workers": "2"},
        },
        "scenarios": scenarios,
        "ratios": report.compute_ratios(scenarios),
        "sweep": [],
        "lost_write": {"ok": all(c["ok"] for c in checks), "checks": checks},
        "failures": [],
        "warnings": [],
        "notes": [],
    }
