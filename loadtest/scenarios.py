"""The named scenarios and the exact wrk/hey command lines each one runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "scripts"
# wrk threads: one per core. The load generator shares these 2 cores with the server; more threads than
# cores only adds context switches in the client (docs/load-testing.md, "Thread counts").
WRK_THREADS = 2
# A slow answer should be measured, not dropped: wrk's default --timeout of 2 s turns any answer slower than
# that into a "timeout" socket error that leaves the latency percentiles.
WRK_TIMEOUT = "10s"
# The design notes' POST body, byte for byte.
POST_BODY = '{"name":"x","description":"y"}'


@dataclass(frozen=True)
class Scenario:
    name: str
    tool: str  # "wrk" | "hey"
    # Which server it loads: "base" (Nginx of the stack or --base-url), "app" (gunicorn, --app-url), "miss" (a
    # second app gunicorn with RESPONSE_CACHE_ENABLED=0), "miss-primary" (the same without the replica),
    # "miss-front" / "noshed-front" (a pass-through Nginx in front of "miss", or of a third with
    # LOAD_SHEDDING_ENABLED=0), "static" / "asgi" (the baselines).
    target: str
    summary: str
    script: str = "report.lua"
    writes: bool = False  # POSTs: the lost-write check runs after each run
    overload: bool = False  # 5x the connections, twice the duration


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("get-nginx-hit", "wrk", "base", "GET /items through Nginx; its 1 s micro-cache answers"),
        Scenario("get-app-hit", "wrk", "app", "GET /items straight to gunicorn (app response cache on)"),
        Scenario("get-app-miss", "wrk", "miss", "GET /items to a second gunicorn with RESPONSE_CACHE_ENABLED=0"),
        # The read-replica pair (issue 19): the same cache-miss GETs, reads on the stack's streaming replica
        # (get-app-miss, the stack's REPLICA_DATABASE_URL) or all on the primary (REPLICA_DATABASE_URL empty).
        Scenario(
            "get-app-miss-primary",
            "wrk",
            "miss-primary",
            "the same as get-app-miss with REPLICA_DATABASE_URL empty: every read on the primary",
        ),
        Scenario(
            "post-accept", "hey", "base", "hey POST /items with the design-notes JSON body, through Nginx", writes=True
        ),
        Scenario(
            "mixed", "wrk", "base", "90% GET / 10% POST /items through Nginx (mixed.lua)", "mixed.lua", writes=True
        ),
        # The overload benchmark (issue 6). Every one of these loads a pass-through Nginx of its own in front of
        # an app gunicorn with the response cache off ("miss-front": load shedding on; "noshed-front": off), so
        # every GET is a cache miss, X-Request-Start is set as in production, and the front's access log gives
        # the latency of each status apart (servers.py, PROXY_CONF). Peaks at the normal connection count,
        # overload at 5x for twice the duration; shedding on and off alike, in the same round.
        Scenario("peak-get", "wrk", "miss-front", "cache-miss GET /items at the normal concurrency, shedding on"),
        Scenario("peak-get-noshed", "wrk", "noshed-front", "the same, LOAD_SHEDDING_ENABLED=0"),
        Scenario(
            "overload",
            "wrk",
            "miss-front",
            "cache-miss GET /items at 5x the connections, load shedding on, closed loop (503s re-sent at once)",
            overload=True,
        ),
        Scenario("overload-noshed", "wrk", "noshed-front", "the same, LOAD_SHEDDING_ENABLED=0", overload=True),
        Scenario(
            "overload-backoff",
            "wrk",
            "miss-front",
            "as overload, but each connection honours Retry-After after a 503/429 (backoff.lua): clients that "
            "back off, as real ones do",
            "backoff.lua",
            overload=True,
        ),
        Scenario(
            "peak-post",
            "wrk",
            "miss-front",
            "POST /items (post.lua) at the normal concurrency",
            "post.lua",
            writes=True,
        ),
        Scenario(
            "peak-post-noshed", "wrk", "noshed-front", "the same, LOAD_SHEDDING_ENABLED=0", "post.lua", writes=True
        ),
        Scenario(
            "overload-post",
            "wrk",
            "miss-front",
            "POST /items at 5x the connections, shedding and backpressure on, closed loop",
            "post.lua",
            writes=True,
            overload=True,
        ),
        Scenario(
            "overload-post-noshed",
            "wrk",
            "noshed-front",
            "the same, LOAD_SHEDDING_ENABLED=0 (POST backpressure stays on)",
            "post.lua",
            writes=True,
            overload=True,
        ),
        Scenario(
            "baseline-nginx-static", "wrk", "static", "a separate Nginx serving the bytes of GET /items as a file"
        ),
        Scenario("baseline-asgi", "wrk", "asgi", "a bare ASGI app returning those bytes, same gunicorn settings"),
    )
}

# The overload table: (request kind, its peak scenario, [(overload scenario, label)]); the peak of shedding
# off is the denominator of shedding off, so each ratio compares one server with itself.
OVERLOAD_ROWS = [
    (
        "GET (cache miss)",
        {"on": "peak-get", "off": "peak-get-noshed"},
        [
            ("overload", "on", "closed loop"),
            ("overload-noshed", "off", "closed loop"),
            ("overload-backoff", "on", "honours Retry-After"),
        ],
    ),
    (
        "POST",
        {"on": "peak-post", "off": "peak-post-noshed"},
        [("overload-post", "on", "closed loop"), ("overload-post-noshed", "off", "closed loop")],
    ),
]
FRONT_TARGETS = {"miss-front": "miss", "noshed-front": "noshed"}  # front -> the gunicorn behind it

# (numerator, denominator, what the ratio says)
RATIOS = [
    ("get-nginx-hit", "baseline-nginx-static", "what the micro-cache path costs over Nginx serving a file"),
    ("get-app-hit", "baseline-asgi", "what Django and the app add over a bare ASGI app under the same gunicorn"),
    ("get-app-hit", "get-app-miss", "what the app response cache buys (> 1: cached reads are faster)"),
    (
        "get-app-miss",
        "get-app-miss-primary",
        "cache-miss reads on the replica over all on the primary (one host: both servers share its cores)",
    ),
]
# Targets whose gunicorn counts its reads by database (items_db_reads_total): each run records the split.
READ_SHARE_TARGETS = ("miss", "miss-primary")


@dataclass(frozen=True)
class Plan:
    scenarios: list[str]
    runs: int
    duration_s: int
    connections: int
    post_requests: int
    warmup_s: int
    sweep_connections: list[int]
    sweep_duration_s: int
    sweep_runs: int
    smoke: bool

    @property
    def overload_connections(self) -> int:
        return self.connections * 5

    @property
    def overload_duration_s(self) -> int:
        # Twice the duration: 30 s at the default 15 s, long enough to see memory drift and a limiter settle.
        return self.duration_s * 2

    def connections_for(self, scenario: Scenario) -> int:
        return self.overload_connections if scenario.overload else self.connections

    def duration_for(self, scenario: Scenario) -> int:
        return self.overload_duration_s if scenario.overload else self.duration_s


def wrk_command(url: str, *, connections: int, duration_s: int, script: str = "report.lua") -> list[str]:
    threads = min(WRK_THREADS, connections)
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(SCRIPTS / script),
        url,
    ]


def hey_command(url: str, *, requests: int, connections: int) -> list[str]:
    return [
        "hey",
        "-n",
        str(requests),
        "-c",
        str(min(connections, requests)),
        "-m",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        POST_BODY,
        url,
    ]


def command_for(scenario: Scenario, url: str, plan: Plan) -> list[str]:
    connections = plan.connections_for(scenario)
    if scenario.tool == "hey":
        return hey_command(url, requests=plan.post_requests, connections=connections)
    return wrk_command(url, connections=connections, duration_s=plan.duration_for(scenario), script=scenario.script)
