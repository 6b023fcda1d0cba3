"""Load testing for the items service: wrk and hey scenarios, same-run baselines, a lost-write check, reports."""
