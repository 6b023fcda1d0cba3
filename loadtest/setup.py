"""Before the runs: where the service answers, the row counter of the lost-write check, the helper servers.

`prepare` finds the targets (the native stack or --base-url/--app-url), captures GET /items for the baselines,
opens the row counter and starts the servers the chosen scenarios load besides the service itself: a static
Nginx, a bare ASGI app, app gunicorns with the response cache or load shedding off, and pass-through front
Nginxes. Every server it starts is appended to the caller's list, so the caller stops them whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.runner import Progress, RowCounter
from loadtest.scenarios import FRONT_TARGETS, SCENARIOS, Plan
from loadtest.servers import Server, count_recycles, http_get, start_gunicorn, start_proxy_nginx, start_static_nginx
from loadtest.stack_env import Stack, find_stack, redact

APP_SCENARIOS = {
    name for name, s in SCENARIOS.items() if s.target in ("app", "miss", "miss-primary", "noshed", *FRONT_TARGETS)
}


class Fatal(Exception):
    """A missing prerequisite: printed as one line naming what is missing, exit status 2."""


@dataclass
class Setup:
    """What the runs and the report need from the preparation."""

    stack: Stack | None  # the native stack found here, used or not
    on_stack: bool  # --base-url is that stack's Nginx
    body: bytes  # GET /items as captured before the runs
    gunicorn_env: dict[str, str]  # what every gunicorn started here runs with
    urls: dict[str, str] = field(default_factory=dict)  # target -> base URL
    skipped: dict[str, str] = field(default_factory=dict)  # scenario -> one-line reason
    fronts: dict[str, tuple[Path, int]] = field(default_factory=dict)  # front -> (access log, gunicorn pid)
    row_counter: RowCounter | None = None
    lost_write_unavailable: str = ""
    stack_gunicorn_log: Path | None = None
    recycles_before: int = 0  # the stack gunicorn's worker recycles before the runs
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def prepare(args: argparse.Namespace, plan: Plan, out_dir: Path, progress: Progress, servers: list[Server]) -> Setup:
    """Everything the runs need before the first one starts; Fatal naming what is missing or failed to start."""
    stack = find_stack()
    base_url = _base_url(args.base_url, stack)
    on_stack = stack is not None and _same_origin(base_url, stack.http_url)
    here = stack if on_stack else None  # the stack behind --base-url, when it is one
    app_url = (args.app_url or (here.web_url if here else "")).rstrip("/")

    progress.update(f"capturing GET {base_url}/items")
    body, _ = _get_items(base_url, "--base-url")
    (out_dir / "items.json").write_bytes(body)
    setup = Setup(
        stack=stack, on_stack=on_stack, body=body, gunicorn_env=_gunicorn_base_env(here), urls={"base": base_url}
    )
    app_env = dict(item.split("=", 1) for item in args.app_env if "=" in item)
    if app_env:
        setup.notes.append("extra environment of the gunicorns started here (--app-env): " + ", ".join(args.app_env))
    if args.front_limit_conn:
        setup.notes.append(
            f"--front-limit-conn {args.front_limit_conn}: the shedding-on front Nginx sheds past that many"
        )
    if app_url:
        _get_items(app_url, "--app-url")
        setup.urls["app"] = app_url
    else:
        for name in APP_SCENARIOS & set(plan.scenarios):
            setup.skipped[name] = "needs --app-url (gunicorn directly; the native stack's is used by default)"

    if here and not _allowlisted(here.allowlist):
        setup.warnings.append(
            f"the stack runs with RATELIMIT_ALLOWLIST={here.allowlist!r}, which does not cover 127.0.0.1: the load "
            "client is rate-limited (expect 429s). Restart it with `RATELIMIT_ALLOWLIST=127.0.0.1/32 make stack` "
            "or let `--start-stack` start it."
        )
    if any(SCENARIOS[name].writes for name in plan.scenarios):
        database_url = args.database_url or (here.database_direct_url if here else None)
        setup.row_counter, setup.lost_write_unavailable = _open_row_counter(database_url)
        if setup.lost_write_unavailable:
            setup.warnings.append(f"lost-write check NOT RUN: {setup.lost_write_unavailable}")

    setup.stack_gunicorn_log = here.directory / "log" / "gunicorn.log" if here else None
    setup.recycles_before = count_recycles(setup.stack_gunicorn_log) if setup.stack_gunicorn_log else 0
    try:
        start_helpers(
            setup,
            plan,
            out_dir=out_dir,
            progress=progress,
            servers=servers,
            app_env=app_env,
            front_limit_conn=args.front_limit_conn,
        )
    except RuntimeError as exc:
        raise Fatal(str(exc)) from None
    setup.notes.extend(_target_notes(setup, plan))
    return setup


def _base_url(given: str | None, stack: Stack | None) -> str:
    if given:
        return given.rstrip("/")
    if stack:
        return stack.http_url
    raise Fatal(
        "no native stack here (.stack/env is missing) and no --base-url: run `make stack`, "
        "or pass --start-stack, or --base-url http://host:port"
    )


def _target_notes(setup: Setup, plan: Plan) -> list[str]:
    """What the report says about the targets: the overload fronts, and what Nginx's cache answered."""
    notes = []
    if "miss-front" in setup.urls:
        notes.append(
            "peak-* and overload-* load a pass-through Nginx of their own (no micro-cache, no rate limits) in front "
            "of an app gunicorn with the response cache off: through the stack's Nginx the micro-cache (and in the "
            "app the cache fast path) would answer every GET and the app's load shedding would never be reached. "
            "The front's access log gives the latency of each status apart (raw/*.access.log)."
        )
    if "get-nginx-hit" in plan.scenarios:
        notes.append(
            "X-Cache-Status of 5 GET /items in a row through Nginx before the runs: "
            f"{_cache_statuses(setup.urls['base']) or 'absent (not the stack Nginx?)'}"
        )
    return notes


def start_helpers(
    setup: Setup,
    plan: Plan,
    *,
    out_dir: Path,
    progress: Progress,
    servers: list[Server],
    app_env: dict[str, str],
    front_limit_conn: int,
) -> None:
    """Start the servers the chosen scenarios load, record their URLs in setup.urls; RuntimeError when one fails."""
    urls, skipped = setup.urls, setup.skipped
    if "baseline-nginx-static" in plan.scenarios:
        progress.update("starting the baseline Nginx (static file)")
        servers.append(start_static_nginx(out_dir / "baseline-nginx", setup.body))
        urls["static"] = servers[-1].url
    if "baseline-asgi" in plan.scenarios:
        progress.update("starting the baseline ASGI app under gunicorn")
        servers.append(
            start_gunicorn(
                "baseline asgi",
                "loadtest.baseline_asgi:app",
                base_env=setup.gunicorn_env,
                work_dir=out_dir / "baseline-asgi",
                extra_env={"LOADTEST_BODY_FILE": str(out_dir / "items.json")},
                ready_path="/items",
            )
        )
        urls["asgi"] = servers[-1].url
    wanted = [n for n in plan.scenarios if n not in skipped]
    for target, users, needs, what, extra_env in _EXTRA_APPS:
        if _needed_here(setup, wanted, users, needs):
            progress.update(f"starting the app gunicorn with {what}")
            urls[target] = _start_app(
                setup, servers, what, out_dir / f"app-{target}", extra_env={**app_env, **extra_env}
            )
    for front, behind in FRONT_TARGETS.items():
        if behind in urls and any(SCENARIOS[n].target == front for n in wanted if n not in skipped):
            progress.update(f"starting the overload front Nginx ({front})")
            gunicorn = next(server for server in servers if server.url == urls[behind])
            limit_conn = front_limit_conn if behind == "miss" else 0
            servers.append(start_proxy_nginx(f"front nginx, {behind}", out_dir / front, gunicorn.port, limit_conn))
            urls[front] = servers[-1].url
            setup.fronts[front] = (out_dir / front / "access.log", gunicorn.proc.pid)


# The extra app gunicorns, each in the stack's environment plus its own: (its target, the targets of the scenarios
# that load it, what it is needed as, what it runs with, its environment). Every one has the response cache off.
_EXTRA_APPS = [
    ("miss", ("miss", "miss-front"), "its second gunicorn", "the cache off", {"RESPONSE_CACHE_ENABLED": "0"}),
    (
        "miss-primary",
        ("miss-primary",),
        "its gunicorn",
        "the cache off and no replica (REPLICA_DATABASE_URL empty)",
        {"RESPONSE_CACHE_ENABLED": "0", "REPLICA_DATABASE_URL": ""},
    ),
    (
        "noshed",
        ("noshed-front",),
        "its gunicorn",
        "the cache and load shedding off (LOAD_SHEDDING_ENABLED=0)",
        {"RESPONSE_CACHE_ENABLED": "0", "LOAD_SHEDDING_ENABLED": "0"},
    ),
]


def _needed_here(setup: Setup, wanted: list[str], targets: tuple[str, ...], needs: str) -> bool:
    """Whether a wanted scenario loads one of `targets`, served by an extra app gunicorn in the stack's
    environment; without the stack those scenarios are marked skipped instead."""
    users = [name for name in wanted if SCENARIOS[name].target in targets]
    if users and not setup.on_stack:
        for name in users:
            setup.skipped[name] = f"needs the native stack's environment (.stack/env) for {needs}"
        return False
    return bool(users)


def _start_app(setup: Setup, servers: list[Server], name: str, work_dir: Path, *, extra_env: dict[str, str]) -> str:
    servers.append(
        start_gunicorn(
            f"app gunicorn, {name}",
            "project.asgi:application",
            base_env=setup.gunicorn_env,
            work_dir=work_dir,
            extra_env=extra_env,
            ready_path="/healthz",
        )
    )
    return servers[-1].url


def _open_row_counter(database_url: str | None) -> tuple[RowCounter | None, str]:
    """The lost-write check's row counter, or None and why it cannot run."""
    if not database_url:
        return None, "no database to count rows in: pass --database-url postgres://… (PostgreSQL itself)"
    try:
        return RowCounter(database_url), ""
    except ImportError:
        return None, "psycopg2 is not installed (make install)"
    except Exception as exc:  # psycopg2.OperationalError and friends: name the cause, go on without
        return None, f"cannot connect to {redact({'u': database_url})['u']}: {str(exc).strip()[:160]}"


def _gunicorn_base_env(stack: Stack | None) -> dict[str, str]:
    """The stack gunicorn's own environment (its /proc entry), so the extra gunicorns run exactly like it;
    without one, this process's environment plus .stack/env."""
    if stack and stack.gunicorn_env:
        return dict(stack.gunicorn_env)
    return {**os.environ, **(stack.env if stack else {})}


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
    """Whether RATELIMIT_ALLOWLIST covers the load client (127.0.0.1); entries that are not CIDRs are skipped."""
    loopback = ipaddress.ip_address("127.0.0.1")
    for cidr in filter(None, (c.strip() for c in allowlist.split(","))):
        with contextlib.suppress(ValueError):
            if loopback in ipaddress.ip_network(cidr, strict=False):
                return True
    return False


def _cache_statuses(base_url: str, probes: int = 5) -> str | None:
    """X-Cache-Status of a few GET /items in a row, e.g. "HIT x4, UPDATING x1"; None when Nginx sends none."""
    parts = urlsplit(base_url)
    host = parts.hostname
    if host is None:
        return None
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for _ in range(probes):
            status = http_get(host, parts.port or 80, "/items")[1].get("x-cache-status", "absent")
            seen[status] = seen.get(status, 0) + 1
    if not seen or set(seen) == {"absent"}:
        return None
    return ", ".join(f"{status} x{n}" for status, n in sorted(seen.items(), key=lambda item: -item[1]))
