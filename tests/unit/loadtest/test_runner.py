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


def test_the_reads_of_a_run_are_split_by_database_from_two_metrics_pages():
    from loadtest.runner import db_reads, read_split

    before = db_reads('items_db_reads_total{database="primary"} 10.0\nitems_db_reads_total{database="replica"} 5.0\n')
    after = db_reads(
        "# HELP items_db_reads_total API reads\n"
        'items_db_reads_total{database="primary"} 30.0\n'
        'items_db_reads_total{database="replica"} 85.0\n'
        'items_db_reads_total_created{database="replica"} 1.7e9\n'
    )
    assert read_split(before, after) == {"primary": 20, "replica": 80, "primary_share": 0.2}
    assert read_split({}, {}) == {"primary": 0, "replica": 0, "primary_share": None}
