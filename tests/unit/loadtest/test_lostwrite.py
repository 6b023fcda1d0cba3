"""The lost-write check on recorded runs: row counts before/after from the database, 202s from hey/wrk output."""

import json
from pathlib import Path

from loadtest.lostwrite import lost_write_verdict, wait_drained
from loadtest.parsers import parse_hey, parse_wrk

FIXTURES = Path(__file__).parent / "fixtures"


def verdict_for(case_file: str):
    case = json.loads((FIXTURES / case_file).read_text())
    output = (FIXTURES / case["load_tool_output"]).read_text()
    result = parse_hey(output) if case["load_tool_output"].startswith("hey") else parse_wrk(output)
    return lost_write_verdict(
        rows_before=case["rows_before"],
        rows_after=case["rows_after"],
        accepted=result.accepted,
        unanswered=result.unanswered_writes,
    )


def test_a_run_that_stored_every_accepted_write_passes():
    verdict = verdict_for("lostwrite_ok.json")

    assert verdict.ok
    assert verdict.accepted == verdict.stored == 1000
    assert verdict.message == "ok: 1000 rows stored == 1000 accepted (202)"


def test_a_run_with_missing_rows_fails_and_says_how_many():
    verdict = verdict_for("lostwrite_missing.json")

    assert not verdict.ok
    assert verdict.accepted == 500
    assert verdict.stored == 497
    assert verdict.missing == 3
    assert verdict.message.startswith("LOST WRITES: 500 accepted (202) but only 497 rows stored: 3 missing")


def test_rows_from_writes_wrk_left_in_flight_are_explained_not_lost():
    verdict = verdict_for("lostwrite_wrk_inflight.json")

    assert verdict.ok
    assert verdict.accepted == 59
    assert verdict.stored == 63
    # 101 requests had no answer when wrk stopped, but only 69 - 59 = 10 of all requests were writes without a 202.
    assert verdict.unanswered == 10
    assert "4 extra came from the 10 writes that got no answer" in verdict.message


def test_extra_rows_beyond_the_writes_in_flight_fail():
    result = parse_wrk((FIXTURES / "wrk_mixed_inflight.txt").read_text())

    verdict = lost_write_verdict(
        rows_before=433, rows_after=433 + 70, accepted=result.accepted, unanswered=result.unanswered_writes
    )

    assert not verdict.ok
    assert verdict.unexplained == 1


def test_unanswered_requests_never_excuse_missing_rows():
    verdict = lost_write_verdict(rows_before=10, rows_after=109, accepted=100, unanswered=50)

    assert not verdict.ok
    assert verdict.missing == 1


def test_more_rows_than_answers_can_explain_fail_as_unexplained():
    # Every hey request was answered, so any extra row is a duplicate or another writer.
    result = parse_hey((FIXTURES / "hey_post_202.txt").read_text())

    verdict = lost_write_verdict(rows_before=0, rows_after=1002, accepted=result.accepted, unanswered=result.unanswered)

    assert not verdict.ok
    assert verdict.unexplained == 2
    assert verdict.message.startswith("UNEXPLAINED ROWS")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_drained_returns_when_the_expected_rows_arrived_and_held_still():
    clock = FakeClock()
    counts = iter([100, 100, 140, 180, 200] + [200] * 100)

    drain = wait_drained(lambda: next(counts), expected_at_least=200, poll_s=0.25, clock=clock, sleep=clock.sleep)

    assert drain.drained
    assert drain.rows == 200
    assert drain.drained_at == 1.0  # the poll that first saw 200
    assert drain.waited_s == 2.0  # plus the 1 s settle window


def test_wait_drained_gives_up_when_no_row_arrives_for_the_idle_timeout():
    clock = FakeClock()
    counts = iter([100, 150] + [150] * 1000)

    drain = wait_drained(
        lambda: next(counts), expected_at_least=200, idle_timeout_s=5, poll_s=0.25, clock=clock, sleep=clock.sleep
    )

    assert not drain.drained
    assert drain.rows == 150
    assert drain.waited_s == 5.25  # 5 s after the last new row (seen at 0.25 s)


def test_wait_drained_is_bounded_even_while_rows_trickle_in():
    clock = FakeClock()
    counter = iter(range(10**6))

    drain = wait_drained(
        lambda: next(counter), expected_at_least=10**9, hard_timeout_s=30, poll_s=0.25, clock=clock, sleep=clock.sleep
    )

    assert not drain.drained
    assert drain.waited_s == 30
