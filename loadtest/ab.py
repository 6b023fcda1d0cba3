"""A/B of the write and read paths in one run (issue 16): the same POST and cache-miss GET load against app
gunicorns that differ in one thing, rounds interleaved, medians and ratios.

    python -m loadtest.ab [--rounds 3] [--post-requests 5000] [--connections 100] [--duration 15]
                          [--baseline-ref GIT-REF] [--start-stack] [--out DIR]

Servers, each a gunicorn of its own on the native stack's environment (deploy/web/start, the stack's worker
count), with the response cache off so every GET reaches the database:
- `write-path`: this checkout (POSTs accepted on the event loop, confirms pipelined);
- `django-path`: this checkout with WRITE_PATH_ENABLED=0 (every POST through Django, a confirm per request);
- `baseline`: with --baseline-ref, that commit checked out in a temporary git worktree and served with this
  checkout's virtualenv: "today's" code for both the POST and the GET figures.

Each round loads every server in turn, starting with the next one each round, with `hey -n N -c C -m POST` (the
design notes' body), waits until the worker has stored them, then loads every server in the same order with
`wrk -c C -d D` GET /items. The report gives per server the
median accepted POST/s, POST p99, non-202 answers, GET 2xx/s, GET p99 and 503s, the web workers' CPU per
accepted POST and per 2xx GET (/proc, around each run), and the ratios to the baseline (or to `django-path`
without one). After the runs, the lost-write check: every 202 of every run is a row. Exit 1
if one is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from loadtest.lostwrite import lost_write_verdict, wait_drained
from loadtest.parsers import LoadResult, parse_hey, parse_wrk
from loadtest.runner import RowCounter
from loadtest.scenarios import hey_command, wrk_command
from loadtest.servers import Server, start_gunicorn
from loadtest.stack_env import REPO, Stack, find_stack, run_on_stack

BASELINE = "baseline"
# Every server of the A/B reads from the database on every GET (no response cache), and from the same one: the
# primary (an earlier commit may know no replica; the replica has its own pair in `python -m loadtest`).
COMMON_ENV = {"RESPONSE_CACHE_ENABLED": "0", "REPLICA_DATABASE_URL": ""}


def _start(stack: Stack, name: str, work_dir: Path, extra: dict[str, str], repo: Path = REPO) -> Server:
    return start_gunicorn(
        name,
        "project.asgi:application",
        base_env=dict(stack.gunicorn_env) or {**stack.env},
        work_dir=work_dir,
        extra_env={**COMMON_ENV, **extra},
        ready_path="/healthz",
        repo=repo,
    )


def _stop_all(servers: dict[str, Server]) -> None:
    for server in servers.values():
        server.stop()


def _run(command: list[str], timeout_s: float) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout_s).stdout


def _summary(posts: list[LoadResult], gets: list[LoadResult], post_cpu_s: list[float], get_cpu_s: list[float]) -> dict:
    def median(values: list[float | None], digits: int = 1) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), digits) if present else None

    def cpu_ms(cpu_s: float, answered: int | None) -> float | None:
        return round(1000 * cpu_s / answered, 3) if answered and cpu_s > 0 else None

    post_cpu_ms = [cpu_ms(c, r.accepted) for c, r in zip(post_cpu_s, posts, strict=True)]
    get_cpu_ms = [cpu_ms(c, _ok(r)) for c, r in zip(get_cpu_s, gets, strict=True)]

    return {
        "post_accepted_per_s": median([r.accepted / r.duration_s if r.duration_s else None for r in posts]),
        "post_accepted_per_s_runs": [round(r.accepted / r.duration_s, 1) if r.duration_s else None for r in posts],
        "post_p99_ms": median([r.latency_ms.get("p99") for r in posts]),
        "post_non_202": [r.requests + r.unanswered - r.accepted for r in posts],
        "get_2xx_per_s": median([_ok_per_s(r) for r in gets]),
        "get_2xx_per_s_runs": [_ok_per_s(r) for r in gets],
        "get_p99_ms": median([r.latency_ms.get("p99") for r in gets]),
        "get_503": [(r.statuses or {}).get("503", 0) for r in gets],
        # The web workers' CPU per accepted POST and per 2xx GET: what the code costs, whatever the neighbours do.
        "post_cpu_ms": median(post_cpu_ms, 3),
        "post_cpu_ms_runs": post_cpu_ms,
        "get_cpu_ms": median(get_cpu_ms, 3),
        "get_cpu_ms_runs": get_cpu_ms,
    }


def _ok(result: LoadResult) -> int:
    return sum(n for status, n in (result.statuses or {}).items() if status.startswith("2"))


def _ok_per_s(result: LoadResult) -> float | None:
    return round(_ok(result) / result.duration_s, 1) if result.duration_s else None


def run(args: argparse.Namespace, out_dir: Path) -> int:
    stack = find_stack()
    if stack is None or not stack.database_direct_url:
        print("ab: no native stack found (make stack, or --start-stack)", file=sys.stderr)
        return 2
    count_rows = RowCounter(stack.database_direct_url)
    servers: dict[str, Server] = {}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_stop_all, servers)
        servers["write-path"] = _start(stack, "write path", out_dir / "write-path", {})
        servers["django-path"] = _start(stack, "django path", out_dir / "django-path", {"WRITE_PATH_ENABLED": "0"})
        if args.baseline_ref:
            worktree = Path(tempfile.mkdtemp(prefix="items-baseline-"))
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline_ref], cwd=REPO,
                           check=True, capture_output=True)  # fmt: skip
            cleanup.callback(
                lambda: subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)
            )
            servers[BASELINE] = _start(stack, f"baseline {args.baseline_ref}", out_dir / BASELINE, {}, repo=worktree)
        rows_before = count_rows()
        posts: dict[str, list[LoadResult]] = {name: [] for name in servers}
        gets: dict[str, list[LoadResult]] = {name: [] for name in servers}
        post_cpu_s: dict[str, list[float]] = {name: [] for name in servers}  # the web workers' CPU per run
        get_cpu_s: dict[str, list[float]] = {name: [] for name in servers}
        accepted = unanswered = 0
        for round_no in range(1, args.rounds + 1):
            order = rotated(list(servers.items()), round_no - 1)
            for name, server in order:
                print(f"ab: round {round_no}/{args.rounds}, POST {name}", file=sys.stderr)
                hey = hey_command(f"{server.url}/items", requests=args.post_requests, connections=args.connections)
                cpu_before = server.workers_cpu_s()
                posts[name].append(parse_hey(_run(hey, timeout_s=600)))
                post_cpu_s[name].append(server.workers_cpu_s() - cpu_before)
                accepted, unanswered = accepted + posts[name][-1].accepted, unanswered + posts[name][-1].unanswered
            # The worker stores the round's writes before the reads start, so no GET run competes with it.
            drain = wait_drained(count_rows, expected_at_least=rows_before + accepted, hard_timeout_s=300)
            for name, server in order:
                print(f"ab: round {round_no}/{args.rounds}, GET {name}", file=sys.stderr)
                wrk = wrk_command(f"{server.url}/items", connections=args.connections, duration_s=args.duration)
                cpu_before = server.workers_cpu_s()
                gets[name].append(parse_wrk(_run(wrk, timeout_s=args.duration + 60)))
                get_cpu_s[name].append(server.workers_cpu_s() - cpu_before)
        drain = wait_drained(count_rows, expected_at_least=rows_before + accepted, hard_timeout_s=300)
    verdict = lost_write_verdict(
        rows_before=rows_before, rows_after=drain.rows, accepted=accepted, unanswered=unanswered
    )
    summaries = {name: _summary(posts[name], gets[name], post_cpu_s[name], get_cpu_s[name]) for name in posts}
    reference = BASELINE if BASELINE in summaries else "django-path"
    report = {
        "rounds": args.rounds,
        "post": " ".join(hey_command("URL", requests=args.post_requests, connections=args.connections)),
        "get": " ".join(wrk_command("URL", connections=args.connections, duration_s=args.duration)),
        "baseline_ref": args.baseline_ref,
        "servers": summaries,
        "ratios_to": reference,
        "ratios": {name: _ratios(summary, summaries[reference]) for name, summary in summaries.items()},
        "lost_write_check": verdict.to_dict(),
        "runs": {name: {"post": [r.to_dict() for r in posts[name]], "get": [r.to_dict() for r in gets[name]]}
                 for name in posts},
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ab.json").write_text(json.dumps(report, indent=2))
    (out_dir / "ab.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0 if verdict.ok else 1


def rotated(items: list, by: int) -> list:
    """`items` starting at index `by` (mod len): each round another server goes first. The first GET run of a
    round follows the round's thousands of inserts, while PostgreSQL is still busy with them; a fixed order
    gave that run to the same server every round (it served fewer GETs, at more CPU each, than another server
    running the same code)."""
    by %= len(items) or 1
    return items[by:] + items[:by]


def _ratios(summary: dict, reference: dict) -> dict:
    """Ratios of the medians, and the median of each round's own ratio (the two servers of a round ran minutes
    apart, not a day: on a shared machine the steadier figure)."""

    def ratio(key: str) -> float | None:
        a, b = summary[key], reference[key]
        return round(a / b, 2) if a and b else None

    def per_round(key: str) -> float | None:
        pairs = [(a, b) for a, b in zip(summary[key + "_runs"], reference[key + "_runs"], strict=True) if a and b]
        return round(statistics.median(a / b for a, b in pairs), 2) if pairs else None

    def fewer(key: str) -> float | None:  # the reference's CPU per request over this one's: >1 is cheaper
        a, b = summary[key], reference[key]
        return round(b / a, 2) if a and b else None

    return {
        "post_accepted_per_s": ratio("post_accepted_per_s"),
        "get_2xx_per_s": ratio("get_2xx_per_s"),
        "post_accepted_per_s_by_round": per_round("post_accepted_per_s"),
        "get_2xx_per_s_by_round": per_round("get_2xx_per_s"),
        "post_cpu_ms": fewer("post_cpu_ms"),
        "get_cpu_ms": fewer("get_cpu_ms"),
    }


def _markdown(report: dict) -> str:
    lines = [
        f"# A/B, {report['rounds']} rounds interleaved (medians); ratios to `{report['ratios_to']}`",
        "",
        f"POST: `{report['post']}`  GET: `{report['get']}`" + (
            f"  baseline: `{report['baseline_ref']}`" if report["baseline_ref"] else ""),
        "",
        "| server | POST accepted/s | ratio (by round) | POST p99 ms | non-202 per run "
        "| GET 2xx/s | ratio (by round) | GET p99 ms | GET 503 per run "
        "| POST CPU ms (ratio) | GET CPU ms (ratio) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]  # fmt: skip
    for name, s in report["servers"].items():
        r = report["ratios"][name]
        lines.append(
            f"| {name} | {s['post_accepted_per_s']} | {r['post_accepted_per_s']} ({r['post_accepted_per_s_by_round']}) "
            f"| {s['post_p99_ms']} | {s['post_non_202']} | {s['get_2xx_per_s']} | {r['get_2xx_per_s']} "
            f"({r['get_2xx_per_s_by_round']}) | {s['get_p99_ms']} | {s['get_503']} "
            f"| {s['post_cpu_ms']} ({r['post_cpu_ms']}) | {s['get_cpu_ms']} ({r['get_cpu_ms']}) |"
        )
    lines += ["", "CPU ms: the web workers' CPU (user + system, /proc) per accepted POST and per 2xx GET, median of the"
              " runs; its ratio is the reference's over this server's (above 1: cheaper)."]  # fmt: skip
    check = report["lost_write_check"]
    lines += ["", f"Lost-write check: {'ok' if check['ok'] else 'FAILED'} ({json.dumps(check)})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--post-requests", type=int, default=5000, help="hey -n per POST run (default 5000)")
    parser.add_argument("--connections", type=int, default=100, help="hey -c and wrk -c (default 100)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk GET run (default 15)")
    parser.add_argument("--baseline-ref", help="also serve this git commit (e.g. the one before a change)")
    parser.add_argument("--start-stack", action="store_true", help="start the native stack if it is not up")
    parser.add_argument("--out", type=Path, help="output folder (default loadtest/results/<timestamp>-ab)")
    args = parser.parse_args(argv)
    out_dir = args.out or REPO / "loadtest" / "results" / (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-ab")
    return run_on_stack(args.start_stack, out_dir, lambda: run(args, out_dir))


if __name__ == "__main__":
    sys.exit(main())
