"""Sustained writes on the native stack: accepted POST/s with publisher confirms, stored rows/s, and the depth of
the items queue over the run, how long an accepted item takes to show in the listing, then the lost-write check
(rows stored == 202s).

    python -m loadtest.sustained_writes [--duration 60] [--concurrency 50] [--start-stack]

Ingest keeps up when the depth stays bounded during the run and drains to zero soon after it. Every 0.25 s a probe
(loadtest/visibility.py) POSTs one item through Nginx and reads the listing from its first page until the item
is on it, through every cache a client reads through: accept → visible, whose p99 the design bounds at 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from loadtest import visibility
from loadtest.lostwrite import lost_write_verdict, wait_drained
from loadtest.parsers import parse_hey
from loadtest.stack_env import REPO, find_stack, run_on_stack

SAMPLE_EVERY_S = 1.0
PROBE_EVERY_S = 0.25


def _row_counter(database_url: str, name: str):
    """The rows of this run's load (its items' name is the run's own): neither the probes' nor anyone else's."""
    import psycopg2

    def count() -> int:
        with psycopg2.connect(database_url, connect_timeout=5) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM items WHERE name = %s", (name,))
            row = cursor.fetchone()
            assert row is not None  # count(*) always returns one row
            return int(row[0])

    return count


def _depth_sampler(broker_url: str, samples: list[tuple[float, int]], stop: threading.Event, started: float):
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as connection:
        channel = connection.channel()
        while not stop.is_set():
            try:
                depth = channel.queue_declare("items", passive=True).message_count  # type: ignore[attr-defined]  # kombu's stubs lack Channel.queue_declare
            except Exception:  # a missed sample is a gap in the series, not a failed run
                depth = -1
            samples.append((round(time.monotonic() - started, 2), depth))
            stop.wait(SAMPLE_EVERY_S)


def _visibility_probes(base_url: str, results: list[visibility.Seen | None], stop: threading.Event) -> None:
    """Every PROBE_EVERY_S until `stop`: a probe of loadtest.visibility in a thread of its own (when its item was
    seen, or None if never) into `results`; a probe whose POST was refused adds nothing."""
    import httpx

    def one() -> None:
        with httpx.Client(timeout=10) as client, contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            result = visibility.probe(client, base_url)
            if result != visibility.REFUSED:
                results.append(result if isinstance(result, visibility.Seen) else None)

    threads = []
    while not stop.is_set():
        threads.append(threading.Thread(target=one, daemon=True))
        threads[-1].start()
        stop.wait(PROBE_EVERY_S)
    for thread in threads:
        thread.join(visibility.GIVE_UP_S + 15)


def _visible_ms(results: list[visibility.Seen | None]) -> dict:
    seen = [r for r in results if r is not None]
    return {"probes": len(results), "never_visible": len(results) - len(seen), **visibility.delays_ms(seen)}


def run(duration_s: int, concurrency: int, out_dir: Path) -> int:
    stack = find_stack()
    if stack is None or not stack.database_direct_url:
        print("sustained_writes: no native stack found (make stack, or --start-stack)", file=sys.stderr)
        return 2
    run_name = f"sustained-writes {uuid.uuid4()}"
    count_rows = _row_counter(stack.database_direct_url, run_name)
    rows_before = count_rows()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    started = time.monotonic()
    sampler = threading.Thread(
        target=_depth_sampler, args=(stack.env["BROKER_URL"], samples, stop, started), daemon=True
    )
    sampler.start()
    visible_after: list[visibility.Seen | None] = []  # one per accepted probe item
    load_over = threading.Event()
    probe = threading.Thread(target=_visibility_probes, args=(stack.http_url, visible_after, load_over), daemon=True)
    probe.start()
    command = [
        "hey", "-z", f"{duration_s}s", "-c", str(concurrency), "-m", "POST",
        "-H", "Content-Type: application/json", "-d", json.dumps({"name": run_name, "description": "y"}),
        f"{stack.http_url}/items",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=False, timeout=duration_s + 120).stdout
    load_ended = time.monotonic()
    load_over.set()  # the probe ends with the load: after it, visibility is no longer measured under load
    result = parse_hey(output)
    # From the load's end, not after the last probes (up to GIVE_UP_S each): the drain is the worker's.
    drain = wait_drained(count_rows, expected_at_least=rows_before + result.accepted, hard_timeout_s=300)
    probe.join(visibility.GIVE_UP_S + 30)
    stop.set()
    sampler.join(5)
    stored = drain.rows - rows_before
    verdict = lost_write_verdict(
        rows_before=rows_before, rows_after=drain.rows, accepted=result.accepted, unanswered=result.unanswered
    )
    stored_over_s = (result.duration_s or 0) + max(0.0, drain.drained_at - load_ended)
    depths = [depth for _, depth in samples if depth >= 0]
    during = [depth for t, depth in samples if depth >= 0 and t <= load_ended - started]
    report = {
        "command": " ".join(command),
        "duration_s": duration_s,
        "concurrency": concurrency,
        "accepted": result.accepted,
        "statuses": result.statuses,
        "accepted_per_s": round(result.accepted / result.duration_s, 1) if result.duration_s else None,
        "p50_ms": result.latency_ms.get("p50"),
        "p99_ms": result.latency_ms.get("p99"),
        "stored": stored,
        # Over the load's own duration (as accepted/s) plus the drain after it.
        "stored_per_s": round(stored / stored_over_s, 1) if stored_over_s else None,
        "drained_s_after_load": round(drain.drained_at - load_ended, 2),
        "max_depth_during_load": max(during, default=None),
        "visible_after_accept_ms": _visible_ms(visible_after),
        "final_depth": depths[-1] if depths else None,
        "depth_samples": samples,
        "lost_write_check": verdict.to_dict(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sustained_writes.json").write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k != "depth_samples"}
    print(json.dumps(summary, indent=2))
    return 0 if verdict.ok and drain.drained else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.sustained_writes", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--concurrency", type=int, default=50, help="hey -c (default 50)")
    parser.add_argument("--start-stack", action="store_true", help="start the native stack if it is not up")
    parser.add_argument("--out", type=Path, help="output folder (default loadtest/results/<timestamp>-writes)")
    args = parser.parse_args(argv)
    out_dir = args.out or REPO / "loadtest" / "results" / (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-writes")
    return run_on_stack(args.start_stack, out_dir, lambda: run(args.duration, args.concurrency, out_dir))


if __name__ == "__main__":
    sys.exit(main())
