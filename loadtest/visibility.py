"""Accept → visible: how long after its 202 an item shows on the first page, as a client sees it through Nginx.

    python -m loadtest.visibility [--duration 60] [--every 0.25] [--base-url URL]

Every `--every` seconds a probe POSTs an item of its own and polls GET /items?limit=100 (the first page, through
Nginx's micro-cache and the app cache, replica or not) every 20 ms until the item is on it; the report is the p50,
p99 and worst of those delays, and how many never showed within 10 s. Under a few hundred writes a second newer
items push a probe's off the first page within a fraction of a second, so a first page that is all newer than the
probe is followed by its `next` links down to the probe's id: the item is visible when the listing that page starts
has it. The delay is counted to the request of the page that had it: never before the row was there. At
thousands of writes a second the item is by then dozens of pages down, most of them not yet cached, so that
figure includes the client's reading of those pages. The report also gives the delay to the first page of the
walk that found it, when the client held a listing with the item in it: the service's staleness without the
reading, and a lower bound (a row committed while the walk went down would count as seen before it existed).
Run it while writes load the stack (e.g. beside `python -m loadtest.sustained_writes`), which is when the
worker's batches, the version bumps and the replica's replay are all busy.
The figure to hold: p99 within 2 s (Nginx's 1 s micro-cache TTL plus the app's own path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import httpx

from loadtest.stack_env import find_stack

POLL_S = 0.02
GIVE_UP_S = 10.0


REFUSED = "refused"  # the probe's POST was not accepted (e.g. 503 overloaded under the write load): nothing to see


@dataclass(frozen=True)
class Seen:
    """When a probe's item showed, in seconds after its 202."""

    page_s: float  # to the request of the page that had it: the figure held to 2 s
    walk_s: float  # to the first page of the walk that found it (a lower bound, see above)


def probe(client: httpx.Client, base_url: str) -> Seen | str | None:
    """When the item of one new POST showed in the listing; None if it never did, REFUSED if the POST was not
    accepted."""
    name = f"visibility probe {uuid.uuid4()}"
    accepted = client.post(f"{base_url}/items", json={"name": name})
    if accepted.status_code != 202:
        return REFUSED
    item_id = accepted.json()["id"]
    started = time.monotonic()
    first_page_etag = None
    while time.monotonic() - started < GIVE_UP_S:
        walk_started = time.monotonic()
        seen_at, first_page_etag = listed(client, base_url, item_id, unchanged=first_page_etag)
        if seen_at is not None:
            return Seen(page_s=seen_at - started, walk_s=walk_started - started)
        time.sleep(POLL_S)
    return None


# How deep the listing is followed: 20,000 newer items, about 9 s of writes at 2,300 a second (the sustained rate
# through Nginx since the write path's group commit). Shallower, a probe seen 1 s after its 202 at that rate was
# already past the last page followed, and counted as never visible.
MAX_PAGES = 200


def listed(
    client: httpx.Client, base_url: str, item_id: str, max_pages: int = MAX_PAGES, *, unchanged: str | None = None
) -> tuple[float | None, str | None]:
    """When (time.monotonic) the page of the listing from the first page that has the item was asked for, None
    when the listing does not have it yet; and the first page's ETag. Pages are followed while all their items
    are newer (UUIDv7: id order is time order, and the text order of the ids is theirs).

    `unchanged`: the first page's ETag at the last walk. The first page is then asked for as a polling client
    asks, with If-None-Match, and a 304 (Nginx answers it from its micro-cache) is not walked again: most polls
    find the first page as it was, and reading it whole fifty times a second made the probe a third of a core.
    That can only count an item later, never earlier (a row stored below a first page that stood still shows at
    the next one)."""
    url = f"{base_url}/items?limit=100"
    first_page_etag = None
    for n in range(max_pages):
        asked_at = time.monotonic()
        conditional = {"If-None-Match": unchanged} if n == 0 and unchanged else None
        response = client.get(url, headers=conditional)
        if n == 0:
            if response.status_code == 304:
                return None, unchanged
            first_page_etag = response.headers.get("etag")
        if response.status_code != 200:
            return None, first_page_etag
        page = response.json()
        ids = [item["id"] for item in page["results"]]
        if item_id in ids:
            return asked_at, first_page_etag
        if not ids or ids[-1] < item_id or not page["next"]:
            return None, first_page_etag  # the page reaches past the item's place without it: not visible yet
        url = base_url + page["next"]
    return None, first_page_etag


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.visibility", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of probing (default 60)")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between probes (default 0.25)")
    parser.add_argument("--base-url", help="default: the native stack's Nginx (STACK_DIR/env)")
    args = parser.parse_args(argv)
    stack = find_stack()
    base_url = (args.base_url or (stack.http_url if stack else "")).rstrip("/")
    if not base_url:
        print("visibility: no native stack (STACK_DIR/env) and no --base-url", file=sys.stderr)
        return 2
    seen: list[Seen] = []
    missed = refused = 0
    lock = threading.Lock()

    def one() -> None:
        nonlocal missed, refused
        with httpx.Client(timeout=10) as client:
            result = probe(client, base_url)
        with lock:
            if result is None:
                missed += 1
            elif isinstance(result, Seen):
                seen.append(result)
            else:
                refused += 1

    threads = []
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(args.every)
    for thread in threads:
        thread.join(GIVE_UP_S + 15)
    summary = {
        "probes": len(seen) + missed + refused,
        "post_not_accepted": refused,
        "never_visible_within_s": {"limit_s": GIVE_UP_S, "count": missed},
        **delays_ms(seen),
    }
    print(json.dumps(summary, indent=2))
    return 0 if not missed and seen and summary["p99"] <= 2000 else 1


def delays_ms(seen: list[Seen]) -> dict:
    """p50, p99 and max of the delays to the page that had the item, and the p50 and p99 to the first page of its
    walk, in milliseconds (None without a probe seen)."""
    pages, walks = [s.page_s for s in seen], [s.walk_s for s in seen]

    def ms(value: float) -> float:
        return round(value * 1000, 1)

    if not seen:
        return {"p50": None, "p99": None, "max": None, "walk_start_p50": None, "walk_start_p99": None}
    return {
        "p50": ms(statistics.median(pages)),
        "p99": ms(percentile(pages, 0.99)),
        "max": ms(max(pages)),
        "walk_start_p50": ms(statistics.median(walks)),
        "walk_start_p99": ms(percentile(walks, 0.99)),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
