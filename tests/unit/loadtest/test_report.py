"""Ratios from the medians of one run, and the overload table: each overload row against its own peak."""

import pytest

from loadtest.report import overload_comparison
from tests.unit.loadtest.recordings import results_from_recordings


def test_ratio_of_app_to_bare_asgi_comes_from_the_medians():
    results = results_from_recordings((1111, 1611))

    ratio = next(r for r in results["ratios"] if r["name"] == "get-app-hit / baseline-asgi")

    assert ratio["rps_ratio"] == pytest.approx((1058 / 5.007679) / (63643 / 5.029902), abs=0.001)
    assert ratio["p50_ms_ratio"] == pytest.approx(218.819 / 6.853, abs=0.01)
    missing = next(r for r in results["ratios"] if r["name"] == "get-app-hit / get-app-miss")
    assert missing["unavailable"] == "not measured in this run: get-app-miss"


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
    scenarios: dict[str, dict] = {
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
