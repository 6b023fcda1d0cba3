"""The exact wrk and hey command lines of the scenarios."""

from pathlib import Path

from loadtest import cli
from loadtest.scenarios import POST_BODY, SCENARIOS, command_for, hey_command, wrk_command


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
