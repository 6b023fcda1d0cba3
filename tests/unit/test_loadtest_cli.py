"""loadtest's command line, command lines of wrk/hey, report and exit status, built from recorded runs."""

import asyncio
import importlib
from pathlib import Path

import pytest

from loadtest import cli, report
from loadtest.lostwrite import lost_write_verdict
from loadtest.parsers import parse_hey, parse_wrk
from loadtest.runner import medians
from loadtest.scenarios import POST_BODY, SCENARIOS, command_for, hey_command, wrk_command
from loadtest.servers import gunicorn_env
from loadtest.stack import read_env_file, redact

FIXTURES = Path(__file__).parent / "fixtures" / "loadtest"


def test_help_names_every_scenario(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])

    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in SCENARIOS:
        assert name in out.replace("- ", "-")  # argparse may wrap inside a name
    assert "--start-stack" in out


def test_unknown_scenario_is_one_line_and_exit_2(capsys, tmp_path):
    assert cli.main(["--scenarios", "get-nginx-hit,nope", "--out", str(tmp_path)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("loadtest: unknown scenario(s) nope")


def test_without_a_stack_or_base_url_it_names_what_is_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_DIR", str(tmp_path / "no-stack"))

    assert cli.main(["--out", str(tmp_path / "out")]) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    # wrk/hey missing on this machine is named first; otherwise the missing stack.
    assert "not found: apt-get install" in err or "no native stack here (.stack/env is missing)" in err


def test_smoke_is_every_scenario_once_and_short():
    plan = cli.make_plan(cli.build_parser().parse_args(["--smoke"]))

    assert plan.scenarios == list(SCENARIOS)
    assert plan.runs == 1
    assert plan.duration_s <= 3
    assert plan.sweep_runs == 1


def test_full_run_has_at_least_three_runs_per_scenario():
    plan = cli.make_plan(cli.build_parser().parse_args([]))

    assert plan.runs >= 3
    assert plan.sweep_connections == [10, 50, 100, 200]


def test_wrk_runs_with_one_thread_per_core_and_the_report_script():
    argv = wrk_command("http://127.0.0.1:8080/items", connections=100, duration_s=15)

    assert argv[:4] == ["wrk", "-t2", "-c100", "-d15s"]
    assert argv[-2].endswith("loadtest/scripts/report.lua")
    assert Path(argv[-2]).exists()
    assert argv[-1] == "http://127.0.0.1:8080/items"


def test_hey_posts_the_design_notes_body():
    argv = hey_command("http://127.0.0.1:8080/items", requests=1000, connections=100)

    assert argv == [
        "hey", "-n", "1000", "-c", "100", "-m", "POST", "-H", "Content-Type: application/json",
        "-d", '{"name":"x","description":"y"}', "http://127.0.0.1:8080/items",
    ]  # fmt: skip
    assert POST_BODY == '{"name":"x","description":"y"}'


def test_overload_has_five_times_the_connections_for_30_s_and_its_peak_the_normal_count():
    plan = cli.make_plan(cli.build_parser().parse_args(["--duration", "15", "--connections", "100"]))

    overload = command_for(SCENARIOS["overload-post"], "http://127.0.0.1:58000/items", plan)
    peak = command_for(SCENARIOS["peak-post"], "http://127.0.0.1:58000/items", plan)

    assert "-c500" in overload and "-d30s" in overload
    assert "-c100" in peak and "-d15s" in peak
    assert overload[overload.index("-s") + 1].endswith("post.lua")


def test_the_backoff_client_counts_like_report_lua_and_waits_as_retry_after_says():
    text = (Path(cli.__file__).parent / "scripts" / "backoff.lua").read_text()

    assert 'dofile(here .. "report.lua")' in text
    assert "function delay()" in text
    assert '"retry-after"' in text and "seconds * 1000" in text


def test_mixed_and_post_scripts_share_the_report_script():
    scripts = Path(cli.__file__).parent / "scripts"
    for name in ("post.lua", "mixed.lua"):
        text = (scripts / name).read_text()
        assert 'dofile(here .. "report.lua")' in text
        assert "loadtest_sent(" in text
    assert "LOADTEST_RESULT" in (scripts / "report.lua").read_text()


def test_stack_env_file_is_read_and_secrets_are_redacted(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(
        "# Written by deploy/stack/stack.py up.\n"
        "SECRET_KEY=abc\n"
        "DATABASE_DIRECT_URL=postgres://items:s3cret@127.0.0.1:55432/items\n"
        "STACK_HTTP_URL=http://127.0.0.1:8080\n"
    )

    env = read_env_file(env_file)
    shown = redact(env)

    assert env["DATABASE_DIRECT_URL"] == "postgres://items:s3cret@127.0.0.1:55432/items"
    assert shown == {
        "DATABASE_DIRECT_URL": "postgres://items:***@127.0.0.1:55432/items",
        "SECRET_KEY": "***",
        "STACK_HTTP_URL": "http://127.0.0.1:8080",
    }


def test_extra_gunicorns_get_their_own_port_and_metrics_dir_and_are_not_stack_children(tmp_path):
    stack_gunicorn = {
        "WEB_CONCURRENCY": "2",
        "GUNICORN_BIND": "127.0.0.1:58000",
        "PROMETHEUS_MULTIPROC_DIR": "/stack/run/prometheus",
        "ITEMS_STACK_CHILD": "/stack",
    }

    env = gunicorn_env(stack_gunicorn, port=41000, metrics_dir=tmp_path, extra={"RESPONSE_CACHE_ENABLED": "0"})

    assert env == {
        "WEB_CONCURRENCY": "2",
        "GUNICORN_BIND": "127.0.0.1:41000",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "RESPONSE_CACHE_ENABLED": "0",
    }


def test_allowlist_covering_loopback_is_recognised():
    assert cli._allowlisted("10.0.0.0/8, 127.0.0.1/32")
    assert cli._allowlisted("127.0.0.0/8")
    assert not cli._allowlisted("")
    assert not cli._allowlisted("10.0.0.0/8,not-a-cidr")


def test_baseline_asgi_app_answers_the_captured_bytes(tmp_path, monkeypatch):
    body = (FIXTURES / "hey_get_200.txt").read_bytes()  # any bytes will do
    (tmp_path / "items.json").write_bytes(body)
    monkeypatch.setenv("LOADTEST_BODY_FILE", str(tmp_path / "items.json"))
    import loadtest.baseline_asgi as baseline

    baseline = importlib.reload(baseline)
    sent = []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(baseline.app({"type": "http", "method": "GET", "path": "/items"}, receive, send))

    assert sent[0]["status"] == 200
    assert (b"content-length", str(len(body)).encode()) in sent[0]["headers"]
    assert sent[1]["body"] == body


# --- report and exit status from recorded runs -----------------------------------------------------------


def _results_from_recordings(lost_write_case: tuple[int, int]) -> dict:
    """A results dict shaped like cli.assemble's, from recorded outputs: GET scenarios from wrk, a POST run."""
    get_app = parse_wrk((FIXTURES / "wrk_mixed_report.txt").read_text()).to_dict()
    baseline = parse_wrk((FIXTURES / "wrk_get_report.txt").read_text()).to_dict()
    post = parse_hey((FIXTURES / "hey_post_lost.txt").read_text())
    rows_before, rows_after = lost_write_case
    verdict = lost_write_verdict(rows_before=rows_before, rows_after=rows_after, accepted=post.accepted)
    scenarios = {
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


def test_ratio_of_app_to_bare_asgi_comes_from_the_medians():
    results = _results_from_recordings((1111, 1611))

    ratio = next(r for r in results["ratios"] if r["name"] == "get-app-hit / baseline-asgi")

    assert ratio["rps_ratio"] == pytest.approx((1058 / 5.007679) / (63643 / 5.029902), abs=0.001)
    assert ratio["p50_ms_ratio"] == pytest.approx(218.819 / 6.853, abs=0.01)
    missing = next(r for r in results["ratios"] if r["name"] == "get-app-hit / get-app-miss")
    assert missing["unavailable"] == "not measured in this run: get-app-miss"


def test_missing_rows_put_a_red_line_in_the_report_and_fail_the_run(tmp_path, capsys):
    results = _results_from_recordings((1111, 1608))  # the recorded run: 500 accepted, 497 stored

    markdown = report.render_markdown(results)
    status = cli.finish(results, tmp_path, cli.Progress())

    assert "🔴 **FAILED: post-accept run 1: LOST WRITES: 500 accepted (202) but only 497 rows stored" in markdown
    assert status == 1
    assert "LOST WRITES" in capsys.readouterr().out
    # finish() may add notes (e.g. charts skipped without matplotlib): the file is the final results rendered.
    assert (tmp_path / "report.md").read_text() == report.render_markdown(results)
    assert "LOST WRITES" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "results.json").exists()


def test_a_clean_run_reports_green_and_exits_0(tmp_path):
    results = _results_from_recordings((1111, 1611))

    status = cli.finish(results, tmp_path, cli.Progress())

    assert status == 0
    assert "🟢 Every lost-write check passed (1 POST-ing runs)" in (tmp_path / "report.md").read_text()
