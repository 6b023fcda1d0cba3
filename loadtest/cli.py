"""`python -m loadtest`: options, pre-flight checks, helper servers, the runs, the report, the exit status."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import charts, meta, report
from loadtest.runner import Context, Progress, RowCounter, run_all, run_sweep
from loadtest.scenarios import FRONT_TARGETS, RATIOS, SCENARIOS, WRK_THREADS, Plan
from loadtest.servers import Server, count_recycles, http_get, start_gunicorn, start_proxy_nginx, start_static_nginx
from loadtest.stack import REPO, Stack, find_stack, redact, stack_is_up, start_stack, stop_stack

RESULTS = Path(__file__).resolve().parent / "results"
APP_SCENARIOS = {name for name, s in SCENARIOS.items() if s.target in ("app", "miss", "noshed", *FRONT_TARGETS)}
# Full run: every scenario x 3 runs x 15 s (overload* 30 s) + the sweep + POST drains. The 8 scenarios before
# the overload benchmark took < 15 min on 2 cores; its 9 add ~12 min (measured alone, 3 rounds).
FULL = {"runs": 3, "duration": 15, "post_requests": 3000, "warmup": 2, "sweep_duration": 5, "sweep_runs": 3}
# Smoke: every scenario once, short; the whole run (stack start included) stays under 3 minutes.
SMOKE = {"runs": 1, "duration": 3, "post_requests": 300, "warmup": 1, "sweep_duration": 2, "sweep_runs": 1}
DEFAULT_CONNECTIONS = 100  # the design notes' -c100
DEFAULT_SWEEP = "10,50,100,200"


class Fatal(Exception):
    """A missing prerequisite: printed as one line naming what is missing, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load-test the items service with wrk and hey: named scenarios, baselines measured in the same "
        "run, a lost-write check after every POST scenario, and a JSON + Markdown + PNG report.",
        epilog="Scenarios: "
        + "; ".join(f"{n} ({s.summary})" for n, s in SCENARIOS.items())
        + ". See loadtest/README.md.",
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
        help="start the native stack (deploy/stack/stack.py up, RATELIMIT_ALLOWLIST=127.0.0.1/32) "
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


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    local = {"127.0.0.1", "localhost", "::1"}
    host_a = "local" if pa.hostname in local else pa.hostname
    host_b = "local" if pb.hostname in local else pb.hostname
    return (host_a, pa.port) == (host_b, pb.port)


def _get_items(base_url: str, what: str) -> tuple[bytes, dict[str, str]]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise Fatal(f"{what} {base_url!r}: expected http://host:port (wrk and hey here speak plain HTTP)")
    try:
        status, headers, body = http_get(parts.hostname, parts.port or 80, (parts.path.rstrip("/") or "") + "/items")
    except OSError as exc:
        raise Fatal(
            f"{what} {base_url}: GET /items failed ({exc}); is it running? (make stack, or --start-stack)"
        ) from None
    if status != 200:
        raise Fatal(f"{what} {base_url}: GET /items answered {status}, expected 200")
    return body, headers


def _allowlisted(allowlist: str) -> bool:
    loopback = ipaddress.ip_address("127.0.0.1")
    for cidr in filter(None, (c.strip() for c in allowlist.split(","))):
        with contextlib.suppress(ValueError):
            if loopback in ipaddress.ip_network(cidr, strict=False):
                return True
    return False


def _cache_statuses(base_url: str, probes: int = 5) -> str | None:
    """X-Cache-Status of a few GET /items in a row, e.g. "HIT x4, UPDATING x1"; None when Nginx sends none."""
    parts = urlsplit(base_url)
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for _ in range(probes):
            status = http_get(parts.hostname, parts.port or 80, "/items")[1].get("x-cache-status", "absent")
            seen[status] = seen.get(status, 0) + 1
    if not seen or set(seen) == {"absent"}:
        return None
    return ", ".join(f"{status} x{n}" for status, n in sorted(seen.items(), key=lambda item: -item[1]))


def _app_reads_cache_switch() -> bool:
    """Whether the app reads RESPONSE_CACHE_ENABLED yet (the caching issue); until then miss == hit."""
    settings = REPO / "project" / "settings.py"
    return settings.exists() and "RESPONSE_CACHE_ENABLED" in settings.read_text()


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
                progress.update("starting the native stack (stack.py up, RATELIMIT_ALLOWLIST=127.0.0.1/32)")
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
            progress.update("stopping the native stack it started (stack.py down)")
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
    clock_start = time.monotonic()
    stack = find_stack()
    warnings: list[str] = []
    notes: list[str] = []
    if args.base_url:
        base_url = args.base_url.rstrip("/")
    elif stack:
        base_url = stack.http_url
    else:
        raise Fatal(
            "no native stack here (.stack/env is missing) and no --base-url: run `make stack`, "
            "or pass --start-stack, or --base-url http://host:port"
        )
    on_stack = stack is not None and _same_origin(base_url, stack.http_url)
    app_url = (args.app_url or (stack.web_url if on_stack and stack else "")).rstrip("/")

    progress.update(f"capturing GET {base_url}/items")
    body, _ = _get_items(base_url, "--base-url")
    (out_dir / "items.json").write_bytes(body)
    urls = {"base": base_url}
    skipped: dict[str, str] = {}
    fronts: dict[str, tuple[Path, int]] = {}
    app_env = dict(item.split("=", 1) for item in args.app_env if "=" in item)
    if app_env:
        notes.append("extra environment of the gunicorns started here (--app-env): " + ", ".join(args.app_env))
    if args.front_limit_conn:
        notes.append(f"--front-limit-conn {args.front_limit_conn}: the shedding-on front Nginx sheds past that many")
    if app_url:
        _get_items(app_url, "--app-url")
        urls["app"] = app_url
    else:
        for name in APP_SCENARIOS & set(plan.scenarios):
            skipped[name] = "needs --app-url (gunicorn directly; the native stack's is used by default)"

    if on_stack and stack and not _allowlisted(stack.allowlist):
        warnings.append(
            f"the stack runs with RATELIMIT_ALLOWLIST={stack.allowlist!r}, which does not cover 127.0.0.1: the load "
            "client is rate-limited (expect 429s). Restart it with `RATELIMIT_ALLOWLIST=127.0.0.1/32 make stack` "
            "or let `--start-stack` start it."
        )

    row_counter, unavailable = None, ""
    if any(SCENARIOS[name].writes for name in plan.scenarios):
        database_url = args.database_url or (stack.database_direct_url if on_stack and stack else None)
        if not database_url:
            unavailable = "no database to count rows in: pass --database-url postgres://… (PostgreSQL itself)"
        else:
            try:
                row_counter = RowCounter(database_url)
            except ImportError:
                unavailable = "psycopg2 is not installed (make install)"
            except Exception as exc:  # psycopg2.OperationalError and friends: name the cause, go on without
                unavailable = f"cannot connect to {redact({'u': database_url})['u']}: {str(exc).strip()[:160]}"
        if unavailable:
            warnings.append(f"lost-write check NOT RUN: {unavailable}")

    gunicorn_base_env = _gunicorn_base_env(stack if on_stack else None)
    stack_gunicorn_log = stack.directory / "log" / "gunicorn.log" if on_stack and stack else None
    recycles_before = count_recycles(stack_gunicorn_log) if stack_gunicorn_log else 0
    try:
        if "baseline-nginx-static" in plan.scenarios:
            progress.update("starting the baseline Nginx (static file)")
            servers.append(start_static_nginx(out_dir / "baseline-nginx", body))
            urls["static"] = servers[-1].url
        if "baseline-asgi" in plan.scenarios:
            progress.update("starting the baseline ASGI app under gunicorn")
            servers.append(
                start_gunicorn(
                    "baseline asgi",
                    "loadtest.baseline_asgi:app",
                    base_env=gunicorn_base_env,
                    work_dir=out_dir / "baseline-asgi",
                    extra_env={"LOADTEST_BODY_FILE": str(out_dir / "items.json")},
                    ready_path="/items",
                )
            )
            urls["asgi"] = servers[-1].url
        wanted = [n for n in plan.scenarios if n not in skipped]
        miss_wanted = [n for n in wanted if SCENARIOS[n].target in ("miss", "miss-front")]
        if miss_wanted:
            if not (on_stack and stack):
                for name in miss_wanted:
                    skipped[name] = "needs the native stack's environment (.stack/env) for its second gunicorn"
            else:
                progress.update("starting the second app gunicorn (RESPONSE_CACHE_ENABLED=0)")
                servers.append(
                    start_gunicorn(
                        "app gunicorn, cache off",
                        "project.asgi:application",
                        base_env=gunicorn_base_env,
                        work_dir=out_dir / "app-miss",
                        extra_env={"RESPONSE_CACHE_ENABLED": "0", **app_env},
                        ready_path="/healthz",
                    )
                )
                urls["miss"] = servers[-1].url
        noshed_wanted = [n for n in wanted if SCENARIOS[n].target == "noshed-front"]
        if noshed_wanted:
            if not (on_stack and stack):
                for name in noshed_wanted:
                    skipped[name] = "needs the native stack's environment (.stack/env) for its gunicorn"
            else:
                progress.update("starting the app gunicorn without load shedding (LOAD_SHEDDING_ENABLED=0)")
                servers.append(
                    start_gunicorn(
                        "app gunicorn, shedding off",
                        "project.asgi:application",
                        base_env=gunicorn_base_env,
                        work_dir=out_dir / "app-noshed",
                        extra_env={**app_env, "RESPONSE_CACHE_ENABLED": "0", "LOAD_SHEDDING_ENABLED": "0"},
                        ready_path="/healthz",
                    )
                )
                urls["noshed"] = servers[-1].url
        for front, behind in FRONT_TARGETS.items():
            if behind in urls and any(SCENARIOS[n].target == front for n in wanted if n not in skipped):
                progress.update(f"starting the overload front Nginx ({front})")
                gunicorn = next(server for server in servers if server.url == urls[behind])
                limit_conn = args.front_limit_conn if behind == "miss" else 0
                servers.append(start_proxy_nginx(f"front nginx, {behind}", out_dir / front, gunicorn.port, limit_conn))
                urls[front] = servers[-1].url
                fronts[front] = (out_dir / front / "access.log", gunicorn.proc.pid)
    except RuntimeError as exc:
        raise Fatal(str(exc)) from None
    if "get-app-miss" in plan.scenarios and "miss" in urls and not _app_reads_cache_switch():
        notes.append(
            "get-app-miss: the app does not read RESPONSE_CACHE_ENABLED yet (the caching issue has not "
            "landed), so it serves the same path as get-app-hit; a ratio near 1 is expected until then."
        )
    if "miss-front" in urls:
        notes.append(
            "peak-* and overload-* load a pass-through Nginx of their own (no micro-cache, no rate limits) in front "
            "of an app gunicorn with the response cache off: through the stack's Nginx the micro-cache (and in the "
            "app the cache fast path) would answer every GET and the app's load shedding would never be reached. "
            "The front's access log gives the latency of each status apart (raw/*.access.log)."
        )
    if "get-nginx-hit" in plan.scenarios:
        notes.append(
            "X-Cache-Status of 5 GET /items in a row through Nginx before the runs: "
            f"{_cache_statuses(base_url) or 'absent (not the stack Nginx?)'}"
        )

    ctx = Context(
        plan=plan,
        out_dir=out_dir,
        urls=urls,
        progress=progress,
        row_counter=row_counter,
        lost_write_unavailable=unavailable,
        servers=servers,
        skipped=skipped,
        run_id_prefix=started_at,
        fronts=fronts,
    )
    scenarios = run_all(ctx, plan.scenarios)
    sweep = run_sweep(ctx) if "app" in urls else []
    if plan.sweep_connections and "app" not in urls:
        notes.append("latency sweep skipped: needs --app-url")

    recycles = {s.name: count_recycles(s.log) for s in servers if "gunicorn" in s.argv[0]}
    if stack_gunicorn_log:
        recycles["stack gunicorn"] = count_recycles(stack_gunicorn_log) - recycles_before
    if any(recycles.values()):
        notes.append(
            "gunicorn recycled workers during the runs (max_requests in deploy/gunicorn.conf.py): "
            + ", ".join(f"{name} {n}" for name, n in recycles.items())
            + ". Each recycle closes that worker's connections (wrk counts read errors) and costs a worker boot."
        )

    results = assemble(
        args,
        plan,
        ctx,
        scenarios,
        sweep,
        started_at,
        clock_start,
        stack,
        on_stack,
        stack_started,
        gunicorn_base_env,
        body,
        warnings,
        notes,
    )
    if row_counter:
        with contextlib.suppress(Exception):
            results["versions"]["database"] = row_counter.server_version()
        row_counter.close()
    return finish(results, out_dir, progress)


def _gunicorn_base_env(stack: Stack | None) -> dict[str, str]:
    """The stack gunicorn's own environment (its /proc entry), so the extra gunicorns run exactly like it;
    without one, this process's environment plus .stack/env."""
    if stack and stack.gunicorn_env:
        return dict(stack.gunicorn_env)
    return {**os.environ, **(stack.env if stack else {})}


def assemble(
    args,
    plan: Plan,
    ctx: Context,
    scenarios: dict,
    sweep: list,
    started_at: str,
    clock_start: float,
    stack: Stack | None,
    on_stack: bool,
    stack_started: bool,
    gunicorn_env: dict[str, str],
    body: bytes,
    warnings: list[str],
    notes: list[str],
) -> dict:
    failures = [
        f"{name} run {run['run']}: {run['error']}"
        for name, entry in scenarios.items()
        for run in entry.get("runs", [])
        if run.get("error")
    ]
    rate_limited = sum(entry.get("statuses_total", {}).get("429", 0) for entry in scenarios.values())
    if rate_limited:
        warnings.append(
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
            "captured_body_bytes": len(body),
            "helper_servers": [{"name": s.name, "url": s.url, "command": " ".join(s.argv)} for s in ctx.servers],
        },
        "commands": ctx.commands,
        "scenarios": scenarios,
        "ratios": report.compute_ratios(scenarios),
        "overload": report.overload_comparison(scenarios),
        "sweep": sweep,
        "lost_write": {"ok": all(c.get("ok") is not False for c in checks), "checks": checks},
        "failures": failures,
        "warnings": warnings,
        "notes": notes,
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
