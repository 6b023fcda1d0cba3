"""loadtest's command line: options, the plan, one-line fatal errors, and the summary and exit status of a run."""

import pytest

from loadtest import cli, report
from loadtest.scenarios import SCENARIOS
from tests.unit.loadtest.recordings import results_from_recordings


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


def test_missing_rows_put_a_red_line_in_the_report_and_fail_the_run(tmp_path, capsys):
    results = results_from_recordings((1111, 1608))  # the recorded run: 500 accepted, 497 stored

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
    results = results_from_recordings((1111, 1611))

    status = cli.finish(results, tmp_path, cli.Progress())

    assert status == 0
    assert "🟢 Every lost-write check passed (1 POST-ing runs)" in (tmp_path / "report.md").read_text()
