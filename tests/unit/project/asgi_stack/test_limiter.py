"""The gradient limiter's math and the queue time read from X-Request-Start."""

from collections.abc import Callable
from typing import Any

import pytest

from project.asgi_stack import limiter as limiter_module
from project.asgi_stack.limiter import GradientLimiter, queue_time_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_windows(
    limiter: GradientLimiter,
    clock: FakeClock,
    *,
    windows: int,
    latency_s: float | Callable[[int], float],
    inflight: int,
) -> None:
    """`windows` sample windows, each with `inflight` requests offered at once. They complete at `latency_s`, or,
    when it is a function, at `latency_s(admitted)`: a CPU-bound backend slows with the requests it runs."""

    def one_round() -> None:
        admitted = sum(limiter.try_acquire() for _ in range(inflight))
        latency = latency_s(admitted) if callable(latency_s) else latency_s
        for _ in range(admitted):
            limiter.release(latency)

    for _ in range(windows):
        for _ in range(max(inflight, limiter_module.SAMPLE_MIN_COUNT) // max(inflight, 1)):
            one_round()
        clock.now += limiter_module.SAMPLE_WINDOW_S
        one_round()


def cpu_bound(admitted: int) -> float:
    """One CPU shared by the requests running: each takes 1 ms per request running beside it."""
    return admitted * 0.001


def limiter_with(clock: FakeClock, **overrides: Any) -> GradientLimiter:
    options: dict[str, Any] = {
        "initial": 20,
        "minimum": 5,
        "maximum": 200,
        "tolerance": 2.0,
        "clock": clock,
    } | overrides
    return GradientLimiter(**options)


def test_the_limit_grows_towards_the_ceiling_while_latency_stays_at_its_baseline_and_the_limit_is_used():
    clock = FakeClock()
    limiter = limiter_with(clock)
    run_windows(limiter, clock, windows=200, latency_s=0.005, inflight=200)
    assert limiter.limit == 200


def test_the_limit_does_not_grow_when_traffic_never_uses_half_of_it():
    clock = FakeClock()
    limiter = limiter_with(clock)
    run_windows(limiter, clock, windows=100, latency_s=0.005, inflight=3)
    assert limiter.limit == 20


def test_the_limit_shrinks_to_the_floor_when_latency_goes_far_above_its_baseline_and_not_below():
    clock = FakeClock()
    limiter = limiter_with(clock)
    run_windows(limiter, clock, windows=50, latency_s=0.005, inflight=200)
    grown = limiter.limit
    run_windows(limiter, clock, windows=5, latency_s=0.5, inflight=200)
    assert limiter.limit < grown
    # At most half per window, smoothed: a single bad window cannot collapse it.
    run_windows(limiter, clock, windows=200, latency_s=0.5, inflight=200)
    assert limiter.limit == 5


def test_latency_within_the_tolerance_does_not_shrink_the_limit():
    clock = FakeClock()
    limiter = limiter_with(clock)
    run_windows(limiter, clock, windows=5, latency_s=0.010, inflight=20)
    before = limiter.limit
    run_windows(limiter, clock, windows=20, latency_s=0.019, inflight=200)
    assert limiter.limit >= before


def test_a_worker_starting_into_heavy_traffic_measures_its_baseline_at_the_floor_not_at_the_load_it_meets():
    clock = FakeClock()
    limiter = limiter_with(clock)  # floor 5, starts at 20, tolerance 2
    assert limiter.cap == 5  # held at the floor until the baseline is measured
    run_windows(limiter, clock, windows=100, latency_s=cpu_bound, inflight=200)
    assert limiter.min_rtt_s == pytest.approx(0.005)  # 5 running, not the 20 it started with
    # Settles where latency is about `tolerance` x the floor's, plus the sqrt headroom: ~14. A baseline learned
    # at 20 running would have let it climb to ~47, all of them threads contending for the GIL.
    assert 10 <= limiter.limit <= 16


def test_every_refresh_period_the_floor_is_held_for_a_few_windows_and_the_limit_then_resumes():
    clock = FakeClock()
    limiter = limiter_with(clock)
    run_windows(limiter, clock, windows=100, latency_s=cpu_bound, inflight=200)
    settled = limiter.cap
    caps = []
    for _ in range(int(1.5 * limiter_module.BASELINE_REFRESH_S / limiter_module.SAMPLE_WINDOW_S)):
        run_windows(limiter, clock, windows=1, latency_s=cpu_bound, inflight=200)
        caps.append(limiter.cap)
    # Once in 1.5 periods, for a few windows (the first may still hold requests admitted above the floor): well
    # under a second in every 30.
    assert 1 <= caps.count(5) <= 5
    assert abs(caps[-1] - settled) <= 1


def test_the_baseline_is_remeasured_at_the_floor_so_a_slower_backend_is_not_overload_forever():
    clock = FakeClock()
    limiter = limiter_with(clock)
    run_windows(limiter, clock, windows=5, latency_s=0.002, inflight=4)
    assert limiter.min_rtt_s == pytest.approx(0.002)
    # The backend is now 10x slower for good: the limit falls to the floor; at the next refresh the baseline
    # is measured again (at the floor), and the limit grows again.
    run_windows(
        limiter,
        clock,
        windows=int(2.2 * limiter_module.BASELINE_REFRESH_S / limiter_module.SAMPLE_WINDOW_S),
        latency_s=0.020,
        inflight=200,
    )
    assert limiter.min_rtt_s == pytest.approx(0.020)
    assert limiter.limit > 5


def test_in_flight_beyond_the_limit_is_refused_and_released_slots_are_reused():
    limiter = limiter_with(FakeClock(), initial=2, minimum=2, maximum=2)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    limiter.release(0.01)
    assert limiter.try_acquire()


@pytest.mark.parametrize(
    ("header", "waited_s"),
    [
        ("t=1699999999.500", 0.5),  # Nginx $msec
        ("t=1699999999500", 0.5),  # milliseconds
        ("t=1699999999500000", 0.5),  # microseconds
        ("1699999998", 2.0),  # no prefix
    ],
)
def test_queue_time_is_read_from_x_request_start_in_any_common_unit(header, waited_s):
    assert queue_time_s(header, 1_700_000_000.0) == pytest.approx(waited_s)


@pytest.mark.parametrize("header", [None, "", "t=", "t=soon", "t=nan", "t=-5"])
def test_a_missing_or_malformed_x_request_start_is_ignored(header):
    assert queue_time_s(header, 1_700_000_000.0) is None
