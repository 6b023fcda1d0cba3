"""Runs a plan: helper servers, runs interleaved across scenarios, lost-write checks, the concurrency sweep."""

from __future__ import annotations

import http.client
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from loadtest.lostwrite import lost_write_verdict, wait_drained
from loadtest.parsers import LoadResult, ParseError, parse_hey, parse_proxy_log, parse_wrk
from loadtest.scenarios import READ_SHARE_TARGETS, SCENARIOS, Plan, Scenario, command_for, wrk_command
from loadtest.servers import Server, http_get, rss_bytes, worker_pids

# Seconds of slack over a run's own duration before the tool is killed: every run is bounded in time.
RUN_TIMEOUT_SLACK_S = 60
# hey -n has no duration of its own; at a floor of 20 POSTs/s this is where a run counts as hung.
HEY_MIN_RPS = 20
# How often the RSS of the gunicorn workers behind a front is sampled during a run.
RSS_SAMPLE_S = 1.0


class Progress:
    """One line on stderr: scenario, run i/N, elapsed. Redrawn in place on a terminal, one line per step
    otherwise (CI logs)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.label = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def _draw(self) -> None:
        if self.tty:
            sys.stderr.write(f"\r\033[Kloadtest: {self.label}  [{self.elapsed()}]")
        else:
            sys.stderr.write(f"loadtest: {self.label}  [{self.elapsed()}]\n")
        sys.stderr.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1):
            self._draw()

    def update(self, label: str) -> None:
        self.label = label
        self._draw()

    def close(self) -> None:
        self._stop.set()
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class _Cursor(Protocol):
    """What RowCounter uses of a DB-API cursor: sqlite3's and psycopg2's alike."""

    def execute(self, query: str, /) -> object: ...
    def fetchone(self) -> Any: ...
    def close(self) -> None: ...


class _Connection(Protocol):
    def cursor(self) -> _Cursor: ...
    def close(self) -> None: ...


class RowCounter:
    """SELECT count(*) FROM items over one autocommit connection: PostgreSQL itself (postgres://…), or the
    embedded default's SQLite file (sqlite:///path, for trying the tool against `make run`)."""

    conn: _Connection

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            import sqlite3

            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10, isolation_level=None)
            self.version_query = "SELECT 'sqlite ' || sqlite_version()"
        else:
            import psycopg2  # only runs with a database need it

            connection = psycopg2.connect(url, connect_timeout=5)
            connection.autocommit = True
            self.conn = connection
            self.version_query = "SHOW server_version"

    def _one(self, query: str) -> Any:
        """The first column of the query's one row, as the driver returns it (int for count(*))."""
        cursor = self.conn.cursor()
        try:
            cursor.execute(query)
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def __call__(self) -> int:
        return int(self._one("SELECT count(*) FROM items"))

    def server_version(self) -> str:
        return str(self._one(self.version_query))

    def close(self) -> None:
        self.conn.close()


@dataclass
class Context:
    plan: Plan
    out_dir: Path
    urls: dict[str, str]  # target -> base URL ("base", "app", "miss", "static", "asgi")
    progress: Progress
    row_counter: RowCounter | None = None
    lost_write_unavailable: str = ""  # why the check cannot run, when it cannot
    servers: list[Server] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # scenario -> one-line reason
    run_id_prefix: str = ""
    # front target -> (its access log, pid of the gunicorn master behind it): per-status latency and memory
    fronts: dict[str, tuple[Path, int]] = field(default_factory=dict)


def _shell(argv: list[str], env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in (env or {}).items())
    return (prefix + " " if prefix else "") + shlex.join(argv)


def run_tool(
    ctx: Context, argv: list[str], *, raw_name: str, timeout_s: float, env: dict[str, str] | None = None
) -> tuple[LoadResult | None, str]:
    """Run wrk or hey once, keep its raw output under raw/, parse it. Returns (result, error)."""
    ctx.commands.append(_shell(argv, env))
    raw_path = ctx.out_dir / "raw" / f"{raw_name}.txt"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})}, check=False
        )
        output = done.stdout + (f"\n--- stderr ---\n{done.stderr}" if done.stderr.strip() else "")
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raw_path.write_text(output)
        return None, f"{argv[0]} did not finish within {timeout_s:g} s (killed)"
    raw_path.write_text(output)
    try:
        return (parse_hey(done.stdout) if argv[0] == "hey" else parse_wrk(done.stdout)), ""
    except ParseError as exc:
        first_line = (done.stderr.strip() or done.stdout.strip()).splitlines()[:1]
        return None, f"{argv[0]} exit {done.returncode}: {exc} ({first_line[0] if first_line else 'no output'})"


def _timeout_for(scenario: Scenario, plan: Plan) -> float:
    if scenario.tool == "hey":
        return plan.post_requests / HEY_MIN_RPS + RUN_TIMEOUT_SLACK_S
    return plan.duration_for(scenario) + RUN_TIMEOUT_SLACK_S


class RssSampler:
    """Sums the RSS of a gunicorn master's live workers every RSS_SAMPLE_S in a thread, for one run. Workers
    are looked up at each sample, so a recycled worker's successor is counted (and the recycle is visible as
    a change of pids)."""

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes summed over workers)
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        pids = worker_pids(self.master_pid)
        self.pids.update(pids)
        self.samples.append((round(time.monotonic() - self._started, 2), sum(rss_bytes(pid) for pid in pids)))

    def _loop(self) -> None:
        self._sample()
        while not self._stop.wait(RSS_SAMPLE_S):
            self._sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        return rss_summary(self.samples, len(self.pids))


def rss_summary(samples: list[tuple[float, int]], workers_seen: int) -> dict:
    """First, peak and last RSS (MiB, summed over the workers) and the growth from the first third of the run
    to the last third (medians, so one sample taken mid-recycle cannot decide it)."""
    values = [rss for _, rss in samples if rss > 0]
    if len(values) < 3:
        return {"samples": len(values)}
    third = max(len(values) // 3, 1)
    early, late = statistics.median(values[:third]), statistics.median(values[-third:])
    mib = 1024 * 1024
    return {
        "samples": len(values),
        "workers_seen": workers_seen,
        "first_mib": round(values[0] / mib, 1),
        "peak_mib": round(max(values) / mib, 1),
        "last_mib": round(values[-1] / mib, 1),
        "growth_pct": round((late - early) / early * 100, 1),
        "series_mib": [round(v / mib, 1) for v in values],
    }


def db_reads(metrics_text: str) -> dict[str, float]:
    """items_db_reads_total by database from a /metrics page (summed over its workers)."""
    reads: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("items_db_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            database = labels.split('database="', 1)[1].split('"', 1)[0]
            reads[database] = reads.get(database, 0.0) + float(value)
    return reads


def read_split(before: dict[str, float], after: dict[str, float]) -> dict:
    """The reads of one run by database, and the primary's share of them."""
    primary = after.get("primary", 0.0) - before.get("primary", 0.0)
    on_replica = after.get("replica", 0.0) - before.get("replica", 0.0)
    total = primary + on_replica
    return {
        "primary": int(primary),
        "replica": int(on_replica),
        "primary_share": round(primary / total, 4) if total else None,
    }


def _db_reads_of(base_url: str) -> dict[str, float] | None:
    parts = urlsplit(base_url)
    try:
        status, _, body = http_get(parts.hostname or "127.0.0.1", parts.port or 80, "/metrics", timeout_s=10)
    except (OSError, http.client.HTTPException):
        return None
    return db_reads(body.decode()) if status == 200 else None


def run_scenario_once(ctx: Context, scenario: Scenario, run: int) -> dict:
    url = ctx.urls[scenario.target] + "/items"
    argv = command_for(scenario, url, ctx.plan)
    env = {"LOADTEST_RUN_ID": f"{ctx.run_id_prefix}-{scenario.name}-{run}"} if scenario.script != "report.lua" else None
    record: dict = {"run": run, "command": _shell(argv, env), "url": url}
    rows_before = ctx.row_counter() if scenario.writes and ctx.row_counter else None
    front = ctx.fronts.get(scenario.target)
    log_offset = front[0].stat().st_size if front and front[0].exists() else 0
    sampler = RssSampler(front[1]) if front else None
    reads_before = _db_reads_of(ctx.urls[scenario.target]) if scenario.target in READ_SHARE_TARGETS else None
    started = time.monotonic()
    record["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result, error = run_tool(
        ctx, argv, raw_name=f"{scenario.name}-run{run}", timeout_s=_timeout_for(scenario, ctx.plan), env=env
    )
    record["result"] = result.to_dict() if result else None
    record["error"] = error
    if reads_before is not None:
        reads_after = _db_reads_of(ctx.urls[scenario.target])
        record["db_reads"] = read_split(reads_before, reads_after) if reads_after is not None else None
    if front and sampler:
        record["rss"] = sampler.stop()
        # wrk has exited; Nginx logs a request when its answer is sent (or when the client went away: 499).
        time.sleep(0.5)
        with open(front[0], "rb") as log:
            log.seek(log_offset)
            text = log.read().decode(errors="replace")
        (ctx.out_dir / "raw" / f"{scenario.name}-run{run}.access.log").write_text(text)
        record["by_status"] = parse_proxy_log(text)
    if scenario.writes:
        record["lost_write"] = _lost_write_check(ctx, scenario, run, result, rows_before, started)
    return record


def _lost_write_check(
    ctx: Context, scenario: Scenario, run: int, result: LoadResult | None, rows_before: int | None, started: float
) -> dict:
    if ctx.row_counter is None or rows_before is None:
        return {"checked": False, "ok": None, "message": f"NOT CHECKED: {ctx.lost_write_unavailable}"}
    if result is None:
        return {"checked": False, "ok": False, "message": "NOT CHECKED: the load tool's output could not be parsed"}
    ctx.progress.update(f"{scenario.name} run {run}/{ctx.plan.runs}: waiting for the queue to drain")
    drain = wait_drained(ctx.row_counter, expected_at_least=rows_before + result.accepted)
    verdict = lost_write_verdict(
        rows_before=rows_before, rows_after=drain.rows, accepted=result.accepted, unanswered=result.unanswered_writes
    )
    ingest_s = drain.drained_at - started
    return {
        "checked": True,
        **verdict.to_dict(),
        "rows_before": rows_before,
        "rows_after": drain.rows,
        "drained": drain.drained,
        "drain_waited_s": round(drain.waited_s, 2),
        "first_post_to_drained_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(verdict.stored / ingest_s, 1) if ingest_s > 0 and verdict.stored > 0 else None,
    }


def warm_up(ctx: Context, scenarios: list[Scenario]) -> None:
    """A short unrecorded GET run per read target: connections, worker imports and caches are warm when the
    first measured run starts. Write scenarios are not warmed (every POST is a row the check must account for)."""
    if ctx.plan.warmup_s <= 0:
        return
    warmed: set[str] = set()
    for scenario in scenarios:
        if scenario.writes or scenario.target in warmed:
            continue
        warmed.add(scenario.target)
        ctx.progress.update(f"warm-up {scenario.name}")
        argv = wrk_command(
            ctx.urls[scenario.target] + "/items", connections=ctx.plan.connections, duration_s=ctx.plan.warmup_s
        )
        run_tool(ctx, argv, raw_name=f"warmup-{scenario.name}", timeout_s=ctx.plan.warmup_s + RUN_TIMEOUT_SLACK_S)


def run_all(ctx: Context, names: list[str]) -> dict[str, dict]:
    """Every scenario's runs, interleaved (run 1 of each, then run 2 of each, ...) so that a slow drift of the
    machine (another tenant, thermal throttling, a growing table) hits every scenario alike."""
    scenarios = [SCENARIOS[name] for name in names if name not in ctx.skipped]
    warm_up(ctx, scenarios)
    results: dict[str, dict] = {
        s.name: {
            "summary": s.summary,
            "tool": s.tool,
            "target": s.target,
            "writes": s.writes,
            "connections": ctx.plan.connections_for(s),
            "duration_s": None if s.tool == "hey" else ctx.plan.duration_for(s),
            "requests_per_run": ctx.plan.post_requests if s.tool == "hey" else None,
            "runs": [],
        }
        for s in scenarios
    }
    for run in range(1, ctx.plan.runs + 1):
        for scenario in scenarios:
            ctx.progress.update(f"{scenario.name} run {run}/{ctx.plan.runs}")
            results[scenario.name]["runs"].append(run_scenario_once(ctx, scenario, run))
    for name, entry in results.items():
        entry["median"] = medians([r["result"] for r in entry["runs"] if r["result"]])
        entry["statuses_total"] = _summed([r["result"]["statuses"] or {} for r in entry["runs"] if r["result"]])
        entry["errors_total"] = _summed([r["result"]["errors"] for r in entry["runs"] if r["result"]])
        ingest = [r["lost_write"].get("ingest_rows_per_s") for r in entry["runs"] if r.get("lost_write")]
        ingest = [value for value in ingest if value]
        if ingest:
            entry["median"]["ingest_rows_per_s"] = round(statistics.median(ingest), 1)
        shares = [
            r["db_reads"]["primary_share"]
            for r in entry["runs"]
            if (r.get("db_reads") or {}).get("primary_share") is not None
        ]
        if shares:
            entry["median"]["primary_read_share"] = round(statistics.median(shares), 4)
        results[name] = entry
    for name, reason in ctx.skipped.items():
        if name in names:
            results[name] = {"summary": SCENARIOS[name].summary, "skipped": reason, "runs": [], "median": {}}
    return results


def run_sweep(ctx: Context) -> list[dict]:
    """get-app-hit at each connection count of the sweep: latency against concurrency."""
    plan = ctx.plan
    sweep: list[dict] = []
    if "app" not in ctx.urls or not plan.sweep_connections:
        return sweep
    for connections in plan.sweep_connections:
        runs: list[dict] = []
        for run in range(1, plan.sweep_runs + 1):
            ctx.progress.update(f"sweep get-app-hit c={connections} run {run}/{plan.sweep_runs}")
            argv = wrk_command(ctx.urls["app"] + "/items", connections=connections, duration_s=plan.sweep_duration_s)
            result, error = run_tool(
                ctx,
                argv,
                raw_name=f"sweep-c{connections}-run{run}",
                timeout_s=plan.sweep_duration_s + RUN_TIMEOUT_SLACK_S,
            )
            runs.append(
                {"run": run, "command": _shell(argv), "result": result.to_dict() if result else None, "error": error}
            )
        sweep.append(
            {"connections": connections, "runs": runs, "median": medians([r["result"] for r in runs if r["result"]])}
        )
    return sweep


def medians(results: list[dict]) -> dict:
    """Median over runs of each figure (the median resists one disturbed run; the mean does not)."""
    if not results:
        return {}

    def median_of(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), 3) if present else None

    return {
        "runs": len(results),
        "rps": median_of([r["rps"] for r in results]),
        **{f"{key}_ms": median_of([r["latency_ms"][key] for r in results]) for key in ("p50", "p90", "p99")},
        "non_2xx_3xx": median_of([r["non_2xx_3xx"] for r in results]),
        "unanswered": median_of([r["unanswered"] for r in results]),
    }


def _summed(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in dicts:
        for key, n in counts.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items()))
