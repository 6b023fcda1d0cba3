"""The runner's memory summary of the workers behind a front."""

from loadtest.runner import rss_summary


def test_rss_that_stays_level_is_flat_and_rss_that_climbs_is_not():
    mib = 1024 * 1024
    level = rss_summary([(t, (180 + t % 2) * mib) for t in range(30)], workers_seen=2)
    climbing = rss_summary([(t, (180 + 3 * t) * mib) for t in range(30)], workers_seen=2)

    assert level["growth_pct"] < 1
    assert level["first_mib"] == 180 and level["peak_mib"] == 181
    assert climbing["growth_pct"] > 30
    assert rss_summary([(0, mib)], workers_seen=1) == {"samples": 1}
