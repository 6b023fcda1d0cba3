"""results.json and report.md from one run's results; ratios computed from the medians of the same run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from loadtest.parsers import error_kind
from loadtest.scenarios import OVERLOAD_ROWS, RATIOS

HOW_TO_READ = """\
- **rps** is HTTP answers per second of any status (a 429 or 503 counts: look at the statuses column).
  **p50/p90/p99** are latency percentiles in milliseconds over the answered requests; p99 is the figure a
  user behind 1 request in 100 sees. Every figure is the **median over the runs** of this report.
- **Ratios** compare two figures measured minutes apart on the same machine in the same report. On a shared,
  noisy 2-core box the absolute rps moves by tens of percent from one hour to the next; a ratio moves far less,
  so targets are stated as ratios. A throughput ratio of 0.5 means half the baseline's requests per second.
- **Baselines**: `baseline-nginx-static` is the most a request through Nginx can cost on this machine (a file
  from the page cache); `baseline-asgi` is the most the app tier can do under the very same gunicorn and
  uvicorn settings (workers, worker class) with no Django at all.
- The load generator runs on the same 2 cores as every server it loads. Numbers are *relative*: they tell you
  which path is cheaper and by how much, not what a production fleet sustains.
- **Lost-write check**: after each POST-ing run the tool waits until the queue has drained and compares rows
  stored in PostgreSQL during the run with the 202s the load tool counted. A 202 that never became a row is a
  lost write and fails the whole run. Requests that got no answer at all (timeouts, resets, or ones wrk still
  had in flight at its deadline) may or may not have been accepted, so they may explain extra rows, never
  missing ones.
- **Ingest rows/s** = rows stored / seconds from the first POST of the run until the last row was stored.
- Raw wrk/hey output of every run is in `raw/`; `results.json` has every figure, the exact commands, the
  versions and the configuration in force.
"""


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _counts(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{key}: {n:,}" for key, n in counts.items())


def _errors(errors: dict[str, int] | None) -> str:
    """hey's error messages embed URLs and addresses; group them by kind for the table."""
    if not errors:
        return "-"
    kinds: dict[str, int] = {}
    for message, n in errors.items():
        kinds[error_kind(message)] = kinds.get(error_kind(message), 0) + n
    return ", ".join(f"{kind}: {n:,}" for kind, n in sorted(kinds.items()))


def compute_ratios(scenarios: dict[str, dict]) -> list[dict]:
    ratios = []
    for numerator, denominator, meaning in RATIOS:
        top, bottom = scenarios.get(numerator, {}).get("median"), scenarios.get(denominator, {}).get("median")
        entry: dict = {
            "name": f"{numerator} / {denominator}",
            "numerator": numerator,
            "denominator": denominator,
            "meaning": meaning,
        }
        if not top or not bottom:
            missing = [name for name, m in ((numerator, top), (denominator, bottom)) if not m]
            entry["unavailable"] = f"not measured in this run: {', '.join(missing)}"
        else:
            for key in ("rps", "p50_ms", "p99_ms"):
                entry[f"{key}_ratio"] = round(top[key] / bottom[key], 3) if top.get(key) and bottom.get(key) else None
        ratios.append(entry)
    return ratios


def lost_write_checks(scenarios: dict[str, dict]) -> list[dict]:
    checks = []
    for name, entry in scenarios.items():
        for run in entry.get("runs", []):
            if run.get("lost_write"):
                checks.append({"scenario": name, "run": run["run"], **run["lost_write"]})
    return checks


def write_json(results: dict, out_dir: Path) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


def render_markdown(results: dict) -> str:
    config, scenarios = results["config"], results["scenarios"]
    lines = [f"# Load test report: {results['started_at']}", ""]
    lines += [*_verdict_lines(results), ""]
    versions = results["versions"]
    base_note = " (the native stack's Nginx)" if config.get("native_stack", {}).get("used") else ""
    lines += [
        f"- Mode: **{'smoke (every scenario once, short; not for decisions)' if config['smoke'] else 'full'}**; "
        f"{config['runs']} run(s) per scenario, median reported; runs interleaved across scenarios.",
        f"- Machine: {results['machine'].get('cpu_count')} CPUs ({results['machine'].get('cpu_model') or '?'}), "
        f"load generator on the same cores. Elapsed {results.get('elapsed_s', 0):.0f} s.",
        f"- Load: wrk `-t{config['wrk_threads']}` `-c{config['connections']}` `-d{config['duration_s']}s`; hey "
        f"`-n {config['post_requests']}` `-c {config['connections']}`; overload `-c{config['overload_connections']}` "
        f"`-d{config['overload_duration_s']}s`.",
        f"- Targets: base URL `{config['base_url']}`{base_note}, app URL `{config.get('app_url') or '-'}` "
        "(gunicorn directly).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        f"- gunicorn in force: {_counts_plain(config.get('gunicorn', {}))}.",
        "",
        "## Results (median of the runs)",
        "",
        "| scenario | what it loads | tool | conns | rps | p50 ms | p90 ms | p99 ms | statuses (all runs) "
        "| errors (all runs) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, entry in scenarios.items():
        if entry.get("skipped"):
            lines.append(f"| {name} | {entry['summary']} | | | skipped: {entry['skipped']} | | | | | |")
            continue
        m = entry.get("median") or {}
        lines.append(
            f"| {name} | {entry['summary']} | {entry['tool']} | {entry['connections']} | {_rps(m.get('rps'))} | "
            f"{_ms(m.get('p50_ms'))} | {_ms(m.get('p90_ms'))} | {_ms(m.get('p99_ms'))} | "
            f"{_counts(entry.get('statuses_total'))} | {_errors(entry.get('errors_total'))} |"
        )
    lines += [
        "",
        "## Ratios (same run, medians)",
        "",
        "| ratio | throughput | p50 latency | p99 latency | what it says |",
        "|---|---:|---:|---:|---|",
    ]
    for ratio in results["ratios"]:
        if ratio.get("unavailable"):
            lines.append(f"| {ratio['name']} | {ratio['unavailable']} | | | {ratio['meaning']} |")
            continue
        cells = [
            f"{ratio[k]:.2f}" if ratio.get(k) is not None else "-"
            for k in ("rps_ratio", "p50_ms_ratio", "p99_ms_ratio")
        ]
        lines.append(f"| {ratio['name']} | {' | '.join(cells)} | {ratio['meaning']} |")
    lines += _read_share_section(scenarios)
    lines += _overload_section(scenarios)
    lines += _writes_section(results) + _sweep_section(results)
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    lines += [
        "",
        "## Charts",
        "",
        "![throughput per scenario](throughput.png)",
        "",
        "![latency per scenario](latency.png)",
        "",
    ]
    if results.get("sweep"):
        lines += ["![latency against concurrency](latency_vs_concurrency.png)", ""]
    if results.get("overload"):
        lines += ["![overload: shedding on vs off](overload.png)", ""]
    lines += _per_run_section(scenarios)
    lines += _config_section(config)
    lines += ["", "## How to read this", "", HOW_TO_READ]
    return "\n".join(lines)


def _counts_plain(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "unknown"


def _verdict_lines(results: dict) -> list[str]:
    checks = results["lost_write"]["checks"]
    lines = []
    failed = [c for c in checks if c.get("ok") is False]
    unchecked = [c for c in checks if not c.get("checked")]
    for check in failed:
        lines.append(f"🔴 **FAILED: {check['scenario']} run {check['run']}: {check['message']}**  ")
    for failure in results.get("failures", []):
        lines.append(f"🔴 **FAILED: {failure}**  ")
    if unchecked and not failed:
        lines.append(f"🟡 **Lost-write check not run**: {unchecked[0]['message']}  ")
    if checks and not failed and not unchecked:
        lines.append(f"🟢 Every lost-write check passed ({len(checks)} POST-ing runs): stored rows == accepted 202s.  ")
    if not checks:
        lines.append("No POST-ing scenario ran: no lost-write check.  ")
    for warning in results.get("warnings", []):
        lines.append(f"⚠️ {warning}  ")
    return lines


def _run_goodput(run: dict) -> float | None:
    """2xx answers per second of one run."""
    result = run.get("result")
    if not result or not result.get("duration_s"):
        return None
    return sum(n for status, n in (result["statuses"] or {}).items() if status.startswith("2")) / result["duration_s"]


def _run_p99_ok(run: dict) -> float | None:
    return run["by_status"]["success"]["p99_ms"] if run.get("by_status") else None


def _goodput(entry: dict) -> float | None:
    """Median over runs of 2xx answers per second."""
    return _median([_run_goodput(r) for r in entry.get("runs", [])])


def _paired_ratio(entry: dict, peak_entry: dict, value) -> float | None:
    """Median over rounds of value(overload run) / value(the peak run of the same round).

    Runs are interleaved across scenarios, so a round's peak and overload runs are a minute or two apart, while
    the shared machine's speed drifts by tens of percent from round to round (peaks of 337-501 2xx/s were seen
    in one report): a ratio within a round compares like with like, a ratio of two medians may pair a fast
    round's peak with a slow round's overload."""
    peaks = {r.get("run", i): value(r) for i, r in enumerate(peak_entry.get("runs", []))}
    ratios = []
    for i, run in enumerate(entry.get("runs", [])):
        mine, peak = value(run), peaks.get(run.get("run", i))
        if mine is not None and peak:
            ratios.append(mine / peak)
    return _median(ratios)


# Issue 6's targets, checked per overload row. Memory counts as flat when the workers' summed RSS in the last
# third of a run is within this much of the first third (median of the samples in each).
TARGET_GOODPUT_OF_PEAK = 0.9
TARGET_P99_OF_PEAK = 3.0
TARGET_MEDIAN_REJECTION_MS = 5.0
FLAT_RSS_GROWTH_PCT = 10.0


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _runs_with(entry: dict, key: str) -> list[dict]:
    return [r[key] for r in entry.get("runs", []) if r.get(key)]


def _rejection_p50(by_status: dict) -> float | None:
    """Median latency of the rejections (503 and 429) of one run, weighted by their counts."""
    rejected = [by_status["by_status"][s] for s in ("503", "429") if s in by_status["by_status"]]
    if not rejected:
        return None
    return max(rejected, key=lambda v: v["count"])["p50_ms"]  # in practice one of them; the larger decides


def overload_comparison(scenarios: dict[str, dict]) -> list[dict]:
    """Every overload scenario against the peak of the same server (scenarios.OVERLOAD_ROWS), medians of runs.

    Goodput and status counts are the client's (wrk); latencies by status are from the front's access log."""
    rows = []
    for kind, peaks, overloads in OVERLOAD_ROWS:
        for name, side, mode in overloads:
            entry = scenarios.get(name)
            if not entry or entry.get("skipped") or not entry.get("runs"):
                continue
            peak_entry = scenarios.get(peaks[side]) or {}
            peak = _goodput(peak_entry)
            peak_p99 = _median([_run_p99_ok(r) for r in peak_entry.get("runs", [])])
            logs, rss = _runs_with(entry, "by_status"), _runs_with(entry, "rss")
            goodput = _goodput(entry)
            p99 = _median([_run_p99_ok(r) for r in entry.get("runs", [])])
            statuses, errors = entry.get("statuses_total") or {}, entry.get("errors_total") or {}
            growth = _median([r.get("growth_pct") for r in rss])
            rows.append(
                {
                    "kind": kind,
                    "scenario": name,
                    "shedding": side,
                    "client": mode,
                    "peak_scenario": peaks[side],
                    "peak_rps": peak,
                    "goodput_rps": goodput,
                    "goodput_of_peak": _paired_ratio(entry, peak_entry, _run_goodput),
                    "p99_success_ms": p99,
                    "p99_success_at_peak_ms": peak_p99,
                    "p99_of_peak": _paired_ratio(entry, peak_entry, _run_p99_ok),
                    "median_rejection_ms": _median([_rejection_p50(b) for b in logs]),
                    "statuses": statuses,
                    "shed": sum(b["shed"] for b in logs),
                    "other_5xx": sum(b["other_5xx"] for b in logs),
                    "client_closed": sum(b["client_closed"] for b in logs),
                    "timeouts": errors.get("timeout", 0),
                    "socket_errors": sum(errors.values()),
                    "rss_peak_mib": _median([r.get("peak_mib") for r in rss]),
                    "rss_growth_pct": growth,
                    "rss_flat": None if growth is None else growth <= FLAT_RSS_GROWTH_PCT,
                }
            )
    return rows


def _ratio_cell(value: float | None, ok: bool | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + ("" if ok is None else (" ✅" if ok else " ❌"))


def _overload_section(scenarios: dict[str, dict]) -> list[str]:
    rows = overload_comparison(scenarios)
    if not rows:
        return []
    lines = [
        "",
        "## Overload: load shedding on vs off (same run)",
        "",
        "Each overload scenario offers 5x the connections of its peak scenario (the same server at the normal "
        "connection count, shedding on or off alike). Goodput = 2xx/s seen by wrk. Both ratios (goodput / peak, "
        "p99 / peak) are medians of each round's own ratio: an overload run against the peak run of the same round, "
        "a minute or two earlier; the 2xx/s and ms columns are medians over runs. Latency by status comes from the "
        "front Nginx's access log (`$request_time`, ms resolution). *closed loop*: wrk re-sends a rejected request "
        "at once (a worst case); *honours Retry-After*: each 503/429 makes that connection wait as told. Targets "
        f"(issue 6): goodput/peak ≥ {TARGET_GOODPUT_OF_PEAK}, p99 of successes ≤ {TARGET_P99_OF_PEAK:g}x its "
        f"value at peak, median rejection < {TARGET_MEDIAN_REJECTION_MS:g} ms, no 5xx but the shed 503s, no "
        f"timeouts, memory flat (RSS growth ≤ {FLAT_RSS_GROWTH_PCT:g}% first third → last third).",
        "",
        "| request | shedding | client | peak 2xx/s | goodput 2xx/s | goodput / peak | p99 ok ms at peak | p99 ok ms "
        "| p99 / peak | median rejection ms | statuses | other 5xx | timeouts | 499 | RSS MiB peak | RSS growth |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        goodput_ok = None if row["goodput_of_peak"] is None else row["goodput_of_peak"] >= TARGET_GOODPUT_OF_PEAK
        p99_ok = None if row["p99_of_peak"] is None else row["p99_of_peak"] <= TARGET_P99_OF_PEAK
        rejection = row["median_rejection_ms"]
        rejection_cell = (
            "-" if rejection is None else _ms(rejection) + (" ✅" if rejection < TARGET_MEDIAN_REJECTION_MS else " ❌")
        )
        growth = row["rss_growth_pct"]
        growth_cell = "-" if growth is None else f"{growth:+.1f}% " + ("flat" if row["rss_flat"] else "GROWS")
        statuses = ", ".join(f"{status}: {n:,}" for status, n in row["statuses"].items()) or "-"
        lines.append(
            f"| {row['kind']} | {row['shedding']} | {row['client']} | {_rps(row['peak_rps'])} | "
            f"{_rps(row['goodput_rps'])} | {_ratio_cell(row['goodput_of_peak'], goodput_ok)} | "
            f"{_ms(row['p99_success_at_peak_ms'])} | {_ms(row['p99_success_ms'])} | "
            f"{_ratio_cell(row['p99_of_peak'], p99_ok)} | {rejection_cell} | {statuses} | {row['other_5xx']} | "
            f"{row['timeouts']} | {row['client_closed']} | {_ms(row['rss_peak_mib'])} | {growth_cell} |"
        )
    lines += [
        "",
        "499 = requests Nginx saw the client give up on: wrk's 10 s timeout, or requests still in flight when wrk "
        "stopped at its deadline. RSS = the app workers' resident memory summed, sampled every second.",
    ]
    return lines


def _read_share_section(scenarios: dict[str, dict]) -> list[str]:
    """Where the reads of the read-replica pair went (items_db_reads_total of their gunicorn, per run)."""
    rows = [(name, entry) for name, entry in scenarios.items() if any(r.get("db_reads") for r in entry.get("runs", []))]
    if not rows:
        return []
    lines = [
        "",
        "## Reads by database (items_db_reads_total of each gunicorn, per run)",
        "",
        "| scenario | primary share (median) | per run: primary / replica reads |",
        "|---|---:|---|",
    ]
    for name, entry in rows:
        share = (entry.get("median") or {}).get("primary_read_share")
        runs = "; ".join(
            f"{r['db_reads']['primary']:,} / {r['db_reads']['replica']:,}" for r in entry["runs"] if r.get("db_reads")
        )
        lines.append(f"| {name} | {'-' if share is None else f'{share:.1%}'} | {runs} |")
    return lines


def _writes_section(results: dict) -> list[str]:
    checks = results["lost_write"]["checks"]
    if not checks:
        return []
    lines = [
        "",
        "## Writes: lost-write check and ingest",
        "",
        "| scenario | run | 202s counted | rows stored | no answer | verdict | ingest rows/s | first POST → drained |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c in checks:
        mark = "🟢" if c.get("ok") else "🔴" if c.get("ok") is False else "🟡"
        lines.append(
            f"| {c['scenario']} | {c['run']} | {c.get('accepted', '-')} | {c.get('stored', '-')} | "
            f"{c.get('unanswered', '-')} | {mark} {c['message']} | {c.get('ingest_rows_per_s') or '-'} | "
            f"{c.get('first_post_to_drained_s', '-')} s |"
        )
    return lines


def _sweep_section(results: dict) -> list[str]:
    if not results.get("sweep"):
        return []
    lines = [
        "",
        "## Latency against concurrency (get-app-hit, gunicorn direct)",
        "",
        "| connections | rps | p50 ms | p90 ms | p99 ms | non-2xx/3xx |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for level in results["sweep"]:
        m = level["median"]
        lines.append(
            f"| {level['connections']} | {_rps(m.get('rps'))} | {_ms(m.get('p50_ms'))} | "
            f"{_ms(m.get('p90_ms'))} | {_ms(m.get('p99_ms'))} | {m.get('non_2xx_3xx', '-')} |"
        )
    return lines


def _per_run_section(scenarios: dict[str, dict]) -> list[str]:
    lines = [
        "## Every run",
        "",
        "| scenario | run | rps | p50 ms | p90 ms | p99 ms | statuses | errors |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, entry in scenarios.items():
        for run in entry.get("runs", []):
            r = run.get("result")
            if not r:
                lines.append(f"| {name} | {run['run']} | failed: {run.get('error')} | | | | | |")
                continue
            lat = r["latency_ms"]
            # Plain wrk runs (no report.lua) only know "non-2xx or 3xx", not which statuses.
            statuses = _counts(r["statuses"]) if r["statuses"] else f"non-2xx/3xx: {r['non_2xx_3xx']}"
            lines.append(
                f"| {name} | {run['run']} | {_rps(r['rps'])} | {_ms(lat['p50'])} | {_ms(lat['p90'])} | "
                f"{_ms(lat['p99'])} | {statuses} | {_errors(r['errors'])} |"
            )
    return lines


def _config_section(config: dict) -> list[str]:
    env = config.get("service_env") or {}
    if not env.get("set"):
        return []
    lines = ["", "<details><summary>Environment the service runs with (secrets redacted)</summary>", ""]
    lines += [f"- `{name}={value}`" for name, value in env["set"].items()]
    if env.get("unset_defaults_apply"):
        lines.append(f"- unset, defaults apply: {', '.join(env['unset_defaults_apply'])}")
    return [*lines, "", "</details>"]


def write_markdown(results: dict, out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(render_markdown(results))
    return path
