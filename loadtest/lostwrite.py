"""The lost-write check: rows stored during a POST scenario must equal the 202s the load tool counted.

`lost_write_verdict` is the pure comparison; `wait_drained` polls a row counter until the queue has drained.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LostWriteVerdict:
    ok: bool
    accepted: int  # 202s counted by the load tool
    stored: int  # rows after - rows before
    unanswered: int  # writes that got no HTTP answer: each may or may not have been accepted
    missing: int  # accepted but not stored: the failure this check exists for
    unexplained: int  # stored beyond accepted + unanswered: duplicates, or another writer during the run
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def lost_write_verdict(*, rows_before: int, rows_after: int, accepted: int, unanswered: int = 0) -> LostWriteVerdict:
    """Compare rows stored with 202s counted.

    Every 202 must become exactly one row. A write that got no answer (a timeout, a reset, or one wrk still
    had in flight when it stopped) may have been accepted all the same, so up to `unanswered` extra rows are
    explained, never a missing one; hey -n waits for every answer, so its runs are exact unless hey itself
    reports errors.
    """
    stored = rows_after - rows_before
    missing = max(accepted - stored, 0)
    unexplained = max(stored - accepted - unanswered, 0)
    if missing:
        message = f"LOST WRITES: {accepted} accepted (202) but only {stored} rows stored: {missing} missing"
    elif unexplained:
        message = (
            f"UNEXPLAINED ROWS: {stored} rows stored for {accepted} accepted (202) and {unanswered} writes without "
            f"an answer: {unexplained} rows too many (duplicates, or another writer during the run)"
        )
    elif stored == accepted:
        message = f"ok: {stored} rows stored == {accepted} accepted (202)"
    else:
        message = (
            f"ok: {stored} rows stored for {accepted} accepted (202); the {stored - accepted} extra came from "
            f"the {unanswered} writes that got no answer"
        )
    return LostWriteVerdict(
        ok=not (missing or unexplained),
        accepted=accepted,
        stored=stored,
        unanswered=unanswered,
        missing=missing,
        unexplained=unexplained,
        message=message,
    )


@dataclass(frozen=True)
class Drain:
    rows: int  # the last count seen
    drained: bool  # reached the expected count and held still; False: gave up (idle or hard timeout)
    drained_at: float  # clock() when the count first reached its final value
    waited_s: float


def wait_drained(
    count_rows: Callable[[], int],
    *,
    expected_at_least: int,
    settle_s: float = 1.0,
    idle_timeout_s: float = 20.0,
    hard_timeout_s: float = 180.0,
    poll_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Drain:
    """Poll `count_rows` until it reaches `expected_at_least` and holds still for `settle_s` (late extras from
    unanswered requests land too), or until no new row arrived for `idle_timeout_s`, or `hard_timeout_s`.

    Bounded in time by construction: at most hard_timeout_s / poll_s polls.
    """
    started = clock()
    rows = count_rows()
    changed_at = started
    while True:
        now = clock()
        if rows >= expected_at_least and now - changed_at >= settle_s:
            return Drain(rows=rows, drained=True, drained_at=changed_at, waited_s=now - started)
        if now - changed_at >= idle_timeout_s or now - started >= hard_timeout_s:
            return Drain(rows=rows, drained=False, drained_at=changed_at, waited_s=now - started)
        sleep(poll_s)
        latest = count_rows()
        if latest != rows:
            rows, changed_at = latest, clock()
