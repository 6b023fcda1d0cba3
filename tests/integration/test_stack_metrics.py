"""/metrics sums every gunicorn worker: the counts match the requests sent, whichever worker served them."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

PATCH_COUNT = re.compile(r'^django_http_requests_total_by_method_total\{method="PATCH"\} (\S+)$', re.MULTILINE)


def patch_requests_counted(stack) -> float:
    text = httpx.get(f"{stack.base_url}/metrics").text
    match = PATCH_COUNT.search(text)
    return float(match.group(1)) if match else 0.0


def gunicorn_workers_with_counters(stack) -> set[int]:
    master = stack.pid("gunicorn")
    workers = set()
    for stat in (stack.stack_dir / "run" / "prometheus").glob("counter_*.db"):
        pid = int(stat.stem.removeprefix("counter_"))
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == master:
            workers.add(pid)
    return workers


def test_request_counts_in_metrics_match_the_requests_sent_across_all_workers(stack):
    requests = 120
    before = patch_requests_counted(stack)

    # A method nobody else uses, each request on a fresh connection so the workers share them out.
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: httpx.patch(f"{stack.web_url}/healthz").status_code, range(requests)))

    assert set(statuses) == {405}
    assert patch_requests_counted(stack) - before == requests
    assert len(gunicorn_workers_with_counters(stack)) >= 2, "only one gunicorn worker served requests"
