"""`python -m loadtest`: options, pre-flight checks, the native stack, the runs, the report, the exit status.

The helper servers and the targets are prepared in loadtest/setup.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadtest import charts, meta, report
from loadtest.runner import Context, Progress, run_all, run_sweep
from loadtest.scenarios import FRONT_TARGETS, RATIOS, SCENARIOS, WRK_THREADS, Plan
from loadtest.servers import Server, count_recycles
from loadtest.setup import Fatal, Setup, prepare
from loadtest.stack_env import redact, stack_is_up, start_stack, stop_stack

RESULTS = Path(__file__).resolve().parent / "results"
# Full run: every scenario x 3 runs x 15 s (overload* 30 s) + the sweep + POST drains.
FULL = {"runs": 3, "duration": 15, "post_requests": 3000, "warmup": 2, "sweep_duration": 5, "sweep_runs": 3}
# Smoke: every scenario once, short; the whole run (stack start included) stays under 3 minutes.
SMOKE = {"runs": 1, "duration": 3, "post_requests": 300, "warmup": 1, "sweep_duration": 2, "sweep_runs": 1}
DEFAULT_CONNECTIONS = 100  # the design notes' -c100
DEFAULT_SWEEP = "10,50,100,200"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load-test the items service with wrk and hey: named scenarios, baselines measured in the same "
        "run, a lost-write check after every POST scenario, and a JSON + Markdown + PNG report.",
        epilog="Scenarios: "
        + "; ".join(f"{n} ({s.summary})" for n, s in SCENARIOS.items())
        + ". See docs/load-testing.md.",
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated names (default: all): " + ",".join(SCENARIOS)
    )
    parser.add_argument(
        "--runs",
        type=int,
        help=f"runs per scenario, median reported (default {FULL['runs']}; --smoke: {SMOKE['runs']})",
    )
    parser.add_argument(
        "--duration",
        type=int,
        metavar="S",
        help=f"seconds per wrk run (default {FULL['duration']}; "
        f"--smoke: {SMOKE['duration']}); overload-* runs twice as long",
    )
    parser.add_argument(
        "--connections",
        type=int,
        metavar="N",
        default=DEFAULT_CONNECTIONS,
        help=f"concurrent connections (default {DEFAULT_CONNECTIONS}); overload-* uses 5x",
    )
    parser.add_argument(
        "--post-requests",
        type=int,
        metavar="N",
        help=f"requests per hey POST run (default {FULL['post_requests']}; --smoke: {SMOKE['post_requests']})",
    )
    parser.add_argument(
        "--sweep",
        default=DEFAULT_SWEEP,
        metavar="C,C,...",
        help=f"connection counts of the get-app-hit latency sweep (default {DEFAULT_SWEEP}; '' skips)",
    )
    parser.add_argument(
        "--base-url",
        help="the public entry point (default: the native stack's Nginx from .stack/env, "
        "i.e. STACK_HTTP_PORT); any URL works, e.g. a docker compose host",
    )
    parser.add_argument(
        "--app-url",
        help="gunicorn directly, for the get-app-* scenarios, overload and the sweep "
        "(default: the native stack's STACK_WEB_PORT when --base-url is the native stack)",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL itself (or sqlite:///path), for the lost-write check (default: the native "
        "stack's DATABASE_DIRECT_URL, STACK_PG_PORT)",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gunicorns the tool starts (get-app-miss, peak-*, overload-*), e.g. "
        "SHED_LIMIT_MIN=150 to try a shedding setting against the same run's shedding-off figures; repeatable",
    )
    parser.add_argument(
        "--front-limit-conn",
        type=int,
        default=0,
        metavar="N",
        help="experiment: the shedding-on front Nginx answers 503 itself past N requests in progress "
        "(limit_conn), before Python sees them (default 0: off)",
    )
    parser.add_argument("--smoke", action="store_true", help="every scenario once, short: the whole run < 3 min")
    parser.add_argument("--out", type=Path, help="output dir (default loadtest/results/<UTC timestamp>/)")
    parser.add_argument(
        "--start-stack",
        action="store_true",
        help="start the native stack (python -m deploy.stack up, RATELIMIT_ALLOWLIST=127.0.0.1/32) "
        "and stop it afterwards; a stack that is already up is used and left running",
    )
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    defaults = SMOKE if args.smoke else FULL
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise Fatal(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    try:
        sweep = [int(c) for c in args.sweep.split(",") if c.strip()]
    except ValueError:
        raise Fatal(f"--sweep {args.sweep!r}: expected comma-separated connection counts such as 10,50,100") from None
    plan = Plan(
        scenarios=names,
        runs=args.runs or defaults["runs"],
        duration_s=args.duration or defaults["duration"],
        connections=args.connections,
        post_requests=args.post_requests or defaults["post_requests"],
        warmup_s=defaults["warmup"],
        sweep_connections=sweep,
        sweep_duration_s=min(defaults["sweep_duration"], args.duration or defaults["sweep_duration"]),
        sweep_runs=min(defaults["sweep_runs"], args.runs or defaults["sweep_runs"]),
        smoke=args.smoke,
    )
    if plan.runs < 1 or plan.duration_s < 1 or plan.connections < 1 or plan.post_requests < 1:
        raise Fatal("--runs, --duration, --connections and --post-requests must be at least 1")
    if any(c < 1 for c in sweep):
        raise Fatal("--sweep connection counts must be at least 1")
    return plan


def check_tools(plan: Plan) -> None:
    tools = {SCENARIOS[name].tool for name in plan.scenarios} | ({"wrk"} if plan.sweep_connections else set())
    if "baseline-nginx-static" in plan.scenarios:
        tools.add("nginx")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = sorted(tool for tool in tools if not shutil.which(tool, path=path))
    if missing:
        raise Fatal(f"{', '.join(missing)} not found: apt-get install {' '.join(missing)} (or make system-deps)")


def _interrupted(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A CI timeout or a closed terminal must still stop the servers this run started (they live in sessions of
    # their own, so nothing else would): turn SIGTERM and SIGHUP into the KeyboardInterrupt path below.
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _main(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(args)
        check_tools(plan)
    except Fatal as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    started_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = (args.out or RESULTS / started_at).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    stack_started = False
    servers: list[Server] = []
    try:
        if args.start_stack:
            if stack_is_up():
                progress.update("the native stack is already up: using it, and leaving it up")
            else:
                progress.update(
                    "starting the native stack (python -m deploy.stack up, RATELIMIT_ALLOWLIST=127.0.0.1/32)"
                )
                # Ours from here on: an interrupt during `up` leaves its detached supervisor booting, and
                # `down` after a failed `up` is harmless.
                stack_started = True
                try:
                    start_stack(out_dir / "stack.log")
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    raise Fatal(str(exc)) from None
        return execute(args, plan, out_dir, started_at, progress, servers, stack_started)
    except Fatal as exc:
        progress.close()
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        print("loadtest: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            server.stop()
        if stack_started:
            progress.update("stopping the native stack it started (python -m deploy.stack down)")
            stop_stack(out_dir / "stack.log")
        progress.close()


def execute(
    args: argparse.Namespace,
    plan: Plan,
    out_dir: Path,
    started_at: str,
    progress: Progress,
    servers: list[Server],
    stack_started: bool,
) -> int:
    """Prepare (loadtest.setup), run the scenarios and the sweep, write the report; returns the exit status."""
    clock_start = time.monotonic()
    setup = prepare(args, plan, out_dir, progress, servers)
    ctx = Context(
        plan=plan,
        out_dir=out_dir,
        urls=setup.urls,
        progress=progress,
        row_counter=setup.row_counter,
        lost_write_unavailable=setup.lost_write_unavailable,
        servers=servers,
        skipped=setup.skipped,
        run_id_prefix=started_at,
        fronts=setup.fronts,
    )
    scenarios = run_all(ctx, plan.scenarios)
    sweep = run_sweep(ctx) if "app" in ctx.urls else []
    if plan.sweep_connections and "app" not in ctx.urls:
        setup.notes.append("latency sweep skipped: needs --app-url")
    setup.notes.extend(_recycle_notes(setup, servers))

    results = assemble(
        ctx=ctx,
        setup=setup,
        scenarios=scenarios,
        sweep=sweep,
        started_at=started_at,
        clock_start=clock_start,
        stack_started=stack_started,
    )
    if setup.row_counter:
        with contextlib.suppress(Exception):
            results["versions"]["database"] = setup.row_counter.server_version()
        setup.row_counter.close()
    return finish(results, out_dir, progress)


def _recycle_notes(setup: Setup, servers: list[Server]) -> list[str]:
    """A note when any gunicorn, the stack's or one started here, recycled workers during the runs."""
    recycles = {s.name: count_recycles(s.log) for s in servers if s.is_gunicorn}
    if setup.stack_gunicorn_log:
        recycles["stack gunicorn"] = count_recycles(setup.stack_gunicorn_log) - setup.recycles_before
    if not any(recycles.values()):
        return []
    return [
        "gunicorn recycled workers during the runs (max_requests in deploy/web/gunicorn.conf.py): "
        + ", ".join(f"{name} {n}" for name, n in recycles.items())
        + ". Each recycle closes that worker's connections (wrk counts read errors) and costs a worker boot."
    ]


def assemble(
    *,
    ctx: Context,
    setup: Setup,
    scenarios: dict,
    sweep: list,
    started_at: str,
    clock_start: float,
    stack_started: bool,
) -> dict:
    """results.json's content: the configuration in force, every scenario, the ratios and the verdicts."""
    plan, stack, on_stack, gunicorn_env = ctx.plan, setup.stack, setup.on_stack, setup.gunicorn_env
    failures = [
        f"{name} run {run['run']}: {run['error']}"
        for name, entry in scenarios.items()
        for run in entry.get("runs", [])
        if run.get("error")
    ]
    rate_limited = sum(entry.get("statuses_total", {}).get("429", 0) for entry in scenarios.values())
    if rate_limited:
        setup.warnings.append(
            f"{rate_limited} answers were 429 (rate limited): the load client is not allow-listed "
            "(RATELIMIT_ALLOWLIST), so these figures measure the rate limiter, not the service."
        )
    checks = report.lost_write_checks(scenarios)
    in_force = meta.config_env(gunicorn_env, also=set(stack.env) if stack else set())
    in_force["set"] = redact(in_force["set"])
    return {
        "tool": "loadtest",
        "started_at": started_at,
        "elapsed_s": round(time.monotonic() - clock_start, 1),
        "machine": meta.machine(),
        "versions": meta.versions(),
        "config": {
            "smoke": plan.smoke,
            "scenarios": plan.scenarios,
            "runs": plan.runs,
            "duration_s": plan.duration_s,
            "connections": plan.connections,
            "wrk_threads": WRK_THREADS,
            "post_requests": plan.post_requests,
            "overload_connections": plan.overload_connections,
            "overload_duration_s": plan.overload_duration_s,
            "warmup_s": plan.warmup_s,
            "sweep": {
                "connections": plan.sweep_connections,
                "duration_s": plan.sweep_duration_s,
                "runs": plan.sweep_runs,
            },
            "base_url": ctx.urls["base"],
            "app_url": ctx.urls.get("app"),
            "helper_urls": {
                k: v for k, v in ctx.urls.items() if k in ("static", "asgi", "miss", "noshed", *FRONT_TARGETS)
            },
            "native_stack": {
                "used": on_stack,
                "started_by_loadtest": stack_started,
                "dir": str(stack.directory) if stack else None,
                "env": redact(stack.env) if stack else None,
            },
            # The settings every gunicorn here runs with: the stack's and the ones started for the baselines.
            "gunicorn": meta.gunicorn_config(gunicorn_env),
            "gunicorn_live_workers": meta.live_worker_count(stack.directory / "run" / "gunicorn.pid")
            if on_stack and stack
            else None,
            # What the service's processes read from their environment (the stack gunicorn's own, when found).
            "service_env": in_force,
            "captured_body_bytes": len(setup.body),
            "helper_servers": [{"name": s.name, "url": s.url, "command": " ".join(s.argv)} for s in ctx.servers],
        },
        "commands": ctx.commands,
        "scenarios": scenarios,
        "ratios": report.compute_ratios(scenarios),
        "overload": report.overload_comparison(scenarios),
        "sweep": sweep,
        "lost_write": {"ok": all(c.get("ok") is not False for c in checks), "checks": checks},
        "failures": failures,
        "warnings": setup.warnings,
        "notes": setup.notes,
        "ratio_definitions": [{"numerator": n, "denominator": d, "meaning": m} for n, d, m in RATIOS],
    }


def finish(results: dict, out_dir: Path, progress: Progress) -> int:
    progress.update("writing the report")
    try:
        results["charts"] = charts.write_charts(results, out_dir)
    except ImportError:
        results["charts"] = []
        results["warnings"].append(
            "charts skipped: matplotlib is not installed (pip install -r loadtest/requirements.txt)"
        )
    report.write_json(results, out_dir)
    report.write_markdown(results, out_dir)
    progress.close()
    failed = [c for c in results["lost_write"]["checks"] if c.get("ok") is False]
    red, green, reset = ("\033[31;1m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
    for name, entry in results["scenarios"].items():
        m = entry.get("median") or {}
        if entry.get("skipped"):
            print(f"  {name:<22} skipped: {entry['skipped']}")
        elif m:
            ingest = f"  ingest {m['ingest_rows_per_s']:,.0f} rows/s" if m.get("ingest_rows_per_s") else ""
            p50, p99 = (f"{m[k]:.1f}" if m.get(k) is not None else "-" for k in ("p50_ms", "p99_ms"))
            print(f"  {name:<22} {m['rps']:>10,.0f} rps  p50 {p50} ms  p99 {p99} ms{ingest}")
    for ratio in results["ratios"]:
        if ratio.get("rps_ratio") is not None:
            print(f"  {ratio['name']:<44} throughput ratio {ratio['rps_ratio']:.2f}")
    for check in results["lost_write"]["checks"]:
        colour = green if check.get("ok") else red
        print(f"{colour}  {check['scenario']} run {check['run']}: {check['message']}{reset}")
    for problem in results["failures"] + results["warnings"]:
        print(f"{red}  {problem}{reset}")
    print(f"report: {out_dir / 'report.md'}")
    if failed:
        print(f"{red}LOST WRITES: {len(failed)} run(s) stored fewer rows than they were promised (202).{reset}")
        return 1
    return 1 if results["failures"] else 0
