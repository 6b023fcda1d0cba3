"""The accept -> visible probe: follows the listing from the first page down to the probe's place, and counts
the delay to the request of the page that first had the item (an HTTP stand-in for the stack)."""

import httpx

from loadtest import visibility

PROBE_ID = "0190-0500"  # UUIDv7s sort as text in time order: "0190-0999" is newer, "0190-0100" older


def _stack(pages_until_visible: int, newer_pages: int):
    """GET /items answers `newer_pages` pages of newer items, then the probe's page; the probe's item is on it from
    the `pages_until_visible`-th walk on. Records each first-page request."""
    first_pages: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"id": PROBE_ID, "status": "accepted"})
        cursor = request.url.params.get("cursor")
        if cursor is None:
            first_pages.append(1)
        page = int(cursor or 0)
        if page < newer_pages:
            results = [{"id": f"0190-{999 - page:04d}"}]
            return httpx.Response(200, json={"results": results, "next": f"/items?limit=100&cursor={page + 1}"})
        shown = [{"id": PROBE_ID}] if len(first_pages) >= pages_until_visible else []
        return httpx.Response(200, json={"results": [*shown, {"id": "0190-0100"}], "next": None})

    return httpx.Client(transport=httpx.MockTransport(handler)), first_pages


def test_the_probe_follows_next_links_past_newer_items_down_to_its_own():
    client, _ = _stack(pages_until_visible=1, newer_pages=30)
    assert visibility.listed(client, "http://stack", PROBE_ID)[0] is not None


def test_an_older_page_without_the_item_is_not_yet_visible_and_the_probe_polls_again():
    client, first_pages = _stack(pages_until_visible=3, newer_pages=2)
    seen = visibility.probe(client, "http://stack")
    assert isinstance(seen, visibility.Seen)
    assert seen.page_s >= seen.walk_s >= 2 * visibility.POLL_S
    assert len(first_pages) == 3


def test_the_report_gives_the_delays_to_the_page_that_had_the_item_and_to_its_walks_first_page():
    seen = [visibility.Seen(page_s=1.0 + n / 100, walk_s=0.5 + n / 100) for n in range(100)]
    report = visibility.delays_ms(seen)
    assert (report["p50"], report["p99"], report["max"]) == (1495.0, 1980.0, 1990.0)
    assert (report["walk_start_p50"], report["walk_start_p99"]) == (995.0, 1480.0)
    assert visibility.delays_ms([])["p99"] is None


def test_a_refused_post_is_reported_as_such():
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(503, json={})))
    assert visibility.probe(client, "http://stack") == visibility.REFUSED


def test_a_first_page_that_has_not_changed_is_asked_for_with_its_etag_and_not_walked_again():
    """Polls 1-3 find the same first page (the second and third by a 304), poll 4 a new one with the item."""
    asked = {"first": 0, "not_modified": 0, "below": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"id": PROBE_ID, "status": "accepted"})
        if request.url.params.get("cursor") is not None:
            asked["below"] += 1
            return httpx.Response(200, json={"results": [{"id": "0190-0100"}], "next": None})
        asked["first"] += 1
        etag = '"new"' if asked["first"] >= 4 else '"old"'
        if request.headers.get("if-none-match") == etag:
            asked["not_modified"] += 1
            return httpx.Response(304, headers={"ETag": etag})
        results = [{"id": "0190-0999"}, *([{"id": PROBE_ID}] if etag == '"new"' else [])]
        next_link = None if etag == '"new"' else "/items?limit=100&cursor=below"
        return httpx.Response(200, headers={"ETag": etag}, json={"results": results, "next": next_link})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    assert isinstance(visibility.probe(client, "http://stack"), visibility.Seen)
    assert asked == {"first": 4, "not_modified": 2, "below": 1}
