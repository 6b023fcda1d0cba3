"""Pure parsers of wrk and hey output into one `LoadResult` shape; no I/O, so tests feed them recorded runs."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

# wrk prints durations with a unit suffix (format_time_us / format_time_s in wrk's units.c) and sizes with
# binary prefixes (format_binary: 1 KB = 1024 B); counts per second use metric prefixes (format_metric).
_TIME_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_BINARY = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_METRIC = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}

RESULT_MARKER = "LOADTEST_RESULT "  # the machine-readable line of loadtest/scripts/report.lua


class ParseError(ValueError):
    """The text is not the output of a finished wrk or hey run (e.g. a usage message or a crash)."""


@dataclass
class LoadResult:
    """One run of one load tool, in one vocabulary whichever tool produced it.

    `requests` counts HTTP answers of any status; `unanswered` counts requests that got none (socket errors,
    timeouts, or, for wrk, requests still in flight when it stopped at its deadline).
    """

    tool: str
    requests: int
    duration_s: float
    rps: float  # HTTP answers per second; errors excluded (wrk's own figure; hey's own includes errors)
    latency_ms: dict[str, float | None]  # p50, p90, p99, mean, max (hey: over answered requests)
    statuses: dict[str, int] | None  # "200" -> count; None when the tool did not break statuses down
    non_2xx_3xx: int
    errors: dict[str, int] = field(default_factory=dict)  # socket-level: kind or message -> count
    bytes_read: int | None = None
    sent: int | None = None  # requests written, when the Lua script counted them
    writes_sent: int | None = None  # of which POSTs (post.lua, mixed.lua)
    unanswered: int = 0
    rps_reported: float | None = None  # the tool's own Requests/sec line

    @property
    def accepted(self) -> int:
        """202 answers: for POST /items, the writes the service promised to store."""
        return (self.statuses or {}).get("202", 0)

    @property
    def unanswered_writes(self) -> int:
        """At most this many writes may have been accepted without the tool seeing the 202.

        hey here only POSTs, so every unanswered request is a write; for wrk scripts that count their writes,
        writes sent minus 202s seen is a second bound (the other POST answers were 4xx/5xx), the tighter wins.
        """
        if self.writes_sent is None:
            return self.unanswered
        return min(self.unanswered, max(self.writes_sent - self.accepted, 0))

    def to_dict(self) -> dict:
        return {**asdict(self), "accepted": self.accepted, "unanswered_writes": self.unanswered_writes}


def _time_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ParseError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _TIME_TO_MS[match[2]]


def _binary_bytes(text: str) -> int:
    match = re.fullmatch(r"([\d.]+)([KMGT]?B)", text.strip())
    if not match:
        raise ParseError(f"not a wrk size: {text!r}")
    return round(float(match[1]) * _BINARY[match[2]])


def _metric(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([kMG]?)", text.strip())
    if not match:
        raise ParseError(f"not a wrk count: {text!r}")
    return float(match[1]) * _METRIC[match[2]]


def parse_wrk(text: str) -> LoadResult:
    """wrk 4.x output, with or without `--latency`, with or without the LOADTEST_RESULT line of report.lua.

    The Lua line, when present, is authoritative (exact counts, microsecond latencies, p90, statuses);
    the human summary is the fallback so the design-notes command (`wrk -t10 -c100 -d30s URL`) parses too.
    """
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", text, re.M)
    if not total:
        raise ParseError("no 'N requests in T, B read' line: not the output of a finished wrk run")
    requests, duration_ms, bytes_read = int(total[1]), _time_ms(total[2]), _binary_bytes(total[3])
    rps_line = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    rps_reported = float(rps_line[1]) if rps_line else None

    errors: dict[str, int] = {}
    socket_line = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        text,
    )
    if socket_line:
        errors = dict(zip(("connect", "read", "write", "timeout"), map(int, socket_line.groups()), strict=True))
    non_2xx_line = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx_3xx = int(non_2xx_line[1]) if non_2xx_line else 0

    latency: dict[str, float | None] = {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    stats = re.search(r"^\s*Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", text, re.M)
    if stats:
        latency["mean"], latency["max"] = _time_ms(stats[1]), _time_ms(stats[3])
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)\s*$", text, re.M):
        if f"p{pct}" in latency:
            latency[f"p{pct}"] = _time_ms(value)

    statuses: dict[str, int] | None = None
    sent: int | None = None
    writes_sent: int | None = None
    lua = parse_report_line(text)
    if lua is not None:
        requests, duration_ms, bytes_read = int(lua["requests"]), lua["duration_us"] / 1000, int(lua["bytes"])
        lua_latency = lua["latency_us"]
        for key in ("p50", "p90", "p99", "mean", "max"):
            latency[key] = lua_latency[key] / 1000
        errors = {kind: int(lua["errors"][kind]) for kind in ("connect", "read", "write", "timeout")}
        non_2xx_3xx = int(lua["errors"]["status"])
        statuses = {str(status): int(count) for status, count in sorted(lua.get("statuses", {}).items())}
        if "sent" in lua:
            sent = int(lua["sent"])
        if "writes_sent" in lua:
            writes_sent = int(lua["writes_sent"])

    duration_s = duration_ms / 1000
    # Without a request counter (plain GET runs) wrk re-sends on reconnect; a socket error is then the best
    # count of requests that got no answer. With one (post.lua, mixed.lua), sent - answered is exact.
    unanswered = max(sent - requests, 0) if sent is not None else sum(errors.values())
    return LoadResult(
        tool="wrk",
        requests=requests,
        duration_s=duration_s,
        rps=requests / duration_s if duration_s else 0.0,
        latency_ms=latency,
        statuses=statuses,
        non_2xx_3xx=non_2xx_3xx,
        errors={kind: n for kind, n in errors.items() if n},
        bytes_read=bytes_read,
        sent=sent,
        writes_sent=writes_sent,
        unanswered=unanswered,
        rps_reported=rps_reported,
    )


def parse_report_line(text: str) -> dict | None:
    """The JSON object of the last LOADTEST_RESULT line, or None when the run had no report.lua."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        return None
    try:
        return json.loads(lines[-1][len(RESULT_MARKER) :])
    except json.JSONDecodeError as exc:
        raise ParseError(f"malformed {RESULT_MARKER.strip()} line: {exc}") from None


def _hey_seconds(text: str, label: str) -> float | None:
    match = re.search(rf"^\s*{re.escape(label)}:\s+([\d.]+) secs", text, re.M)
    return float(match[1]) if match else None


def parse_hey(text: str) -> LoadResult:
    """hey output: Summary, Latency distribution, Status code distribution and Error distribution.

    hey's Requests/sec counts failed requests too (it is n / total time); `rps` here counts HTTP answers only,
    like wrk's, and the tool's own figure is kept in `rps_reported`.
    """
    total_s = _hey_seconds(text, "Total")
    if total_s is None or "Summary:" not in text:
        raise ParseError("no 'Summary: Total: … secs': not the output of a finished hey run")
    rps_line = re.search(r"^\s*Requests/sec:\s+([\d.]+)", text, re.M)
    data_line = re.search(r"^\s*Total data:\s+(\d+) bytes", text, re.M)

    percentiles = dict(re.findall(r"^\s*(\d+)% in ([\d.]+) secs", text, re.M))
    average_s = _hey_seconds(text, "Average")
    slowest_s = _hey_seconds(text, "Slowest")
    latency: dict[str, float | None] = {
        f"p{pct}": float(percentiles[pct]) * 1000 if pct in percentiles else None for pct in ("50", "90", "99")
    }
    latency["mean"] = average_s * 1000 if average_s is not None else None
    latency["max"] = slowest_s * 1000 if slowest_s is not None else None

    statuses = {status: int(count) for status, count in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", text, re.M)}
    errors: dict[str, int] = {}
    error_section = text.split("Error distribution:", 1)[1] if "Error distribution:" in text else ""
    for count, message in re.findall(r"^\s*\[(\d+)\]\s+(.+?)\s*$", error_section, re.M):
        errors[message] = errors.get(message, 0) + int(count)

    answered = sum(statuses.values())
    return LoadResult(
        tool="hey",
        requests=answered,
        duration_s=total_s,
        rps=answered / total_s if total_s else 0.0,
        latency_ms=latency,
        statuses=dict(sorted(statuses.items())),
        non_2xx_3xx=sum(n for status, n in statuses.items() if not "200" <= status < "400"),
        errors=errors,
        bytes_read=int(data_line[1]) if data_line else None,
        sent=answered + sum(errors.values()),
        unanswered=sum(errors.values()),
        rps_reported=float(rps_line[1]) if rps_line else None,
    )


def error_kind(message: str) -> str:
    """A short, stable label for one of hey's error messages (they embed the URL and the address)."""
    for needle, label in (
        ("Client.Timeout", "timeout"),
        ("deadline exceeded", "timeout"),
        ("connection refused", "connection refused"),
        ("connection reset", "connection reset"),
        ("EOF", "connection closed (EOF)"),
        ("broken pipe", "broken pipe"),
        ("too many open files", "too many open files"),
    ):
        if needle in message:
            return label
    return message.rsplit(": ", 1)[-1][:60]


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (no interpolation: a value that was really measured)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100)
    return sorted_values[int(rank) - 1]


def parse_proxy_log(text: str) -> dict:
    """The access log of the overload front (loadtest/servers.py PROXY_LOG_FORMAT), one line per request:

        $msec $status $request_time $upstream_response_time $upstream_status $sent_http_retry_after

    Returns per status (and for every 2xx together, `success`) the count and p50/p90/p99 of $request_time
    in ms (what the client waited, from Nginx reading the request to sending the answer), plus `shed`: the
    503s sent with Retry-After (the app's shedder or POST backpressure, or the front's limit), `other_5xx`: every other
    5xx, Nginx's own 502/504 included, and `client_closed`: Nginx's 499, requests the client gave up on
    (wrk's timeout, or still in flight when wrk stopped).
    Lines that do not fit the format are counted in `unparsed`, never silently dropped.
    """
    times: dict[str, list[float]] = {}
    shed = unparsed = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or not fields[1].isdigit():
            if line.strip():
                unparsed += 1
            continue
        status = fields[1]
        try:
            request_ms = float(fields[2]) * 1000
        except ValueError:
            unparsed += 1
            continue
        times.setdefault(status, []).append(request_ms)
        if status == "503" and fields[5] != "-":
            shed += 1
    by_status = {}
    for status, values in sorted(times.items()):
        values.sort()
        by_status[status] = {
            "count": len(values),
            **{f"p{pct}_ms": _percentile(values, pct) for pct in (50, 90, 99)},
        }
    five_xx = sum(len(values) for status, values in times.items() if status.startswith("5"))
    success = sorted(t for status, values in times.items() if status.startswith("2") for t in values)
    return {
        "by_status": by_status,
        "success": {"count": len(success), **{f"p{pct}_ms": _percentile(success, pct) for pct in (50, 90, 99)}},
        "shed": shed,
        "other_5xx": five_xx - shed,
        "client_closed": by_status.get("499", {}).get("count", 0),
        "unparsed": unparsed,
    }
