"""PNG charts of one report: throughput and latency per scenario across runs, latency against concurrency."""

from __future__ import annotations

from pathlib import Path


def write_charts(results: dict, out_dir: Path) -> list[str]:
    """Returns the file names written; raises ImportError when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    measured = {
        name: [run["result"] for run in entry.get("runs", []) if run.get("result")]
        for name, entry in results["scenarios"].items()
    }
    measured = {name: runs for name, runs in measured.items() if runs}
    written = []
    if measured:
        written.append(_throughput(plt, results, measured, out_dir))
        written.append(_latency(plt, results, measured, out_dir))
    if results.get("sweep"):
        written.append(_sweep(plt, results, out_dir))
    if results.get("overload"):
        written.append(_overload(plt, results, out_dir))
    return written


def _title(results: dict, what: str) -> str:
    mode = "smoke" if results["config"]["smoke"] else f"median of {results['config']['runs']} runs"
    return f"{what} ({mode}, {results['machine'].get('cpu_count')} CPUs, {results['started_at']})"


def _throughput(plt, results: dict, measured: dict[str, list[dict]], out_dir: Path) -> str:
    names = list(measured)
    fig, ax = plt.subplots(figsize=(11, 5))
    medians = [results["scenarios"][name]["median"]["rps"] or 0 for name in names]
    ax.bar(range(len(names)), medians, color="#9ecae1", label="median")
    for index, name in enumerate(names):
        values = [r["rps"] for r in measured[name]]
        ax.scatter(
            [index] * len(values), values, color="#08519c", zorder=3, s=18, label="each run" if index == 0 else None
        )
        ax.annotate(f"{medians[index]:,.0f}", (index, medians[index]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yscale("log")  # a file from Nginx and a Django view differ by an order of magnitude or more
    ax.set_ylabel("requests/s (log scale)")
    ax.set_title(_title(results, "Throughput per scenario"))
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    return "throughput.png"


def _latency(plt, results: dict, measured: dict[str, list[dict]], out_dir: Path) -> str:
    names = list(measured)
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.26
    for offset, (key, color) in enumerate((("p50", "#a1d99b"), ("p90", "#fdae6b"), ("p99", "#fc9272"))):
        xs = [index + (offset - 1) * width for index in range(len(names))]
        medians = [results["scenarios"][name]["median"].get(f"{key}_ms") or 0 for name in names]
        ax.bar(xs, medians, width, color=color, label=f"{key} (median)")
        for x, name in zip(xs, names, strict=True):
            values = [r["latency_ms"][key] for r in measured[name] if r["latency_ms"][key] is not None]
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("latency ms (log scale); dots: each run")
    ax.set_title(_title(results, "Latency per scenario"))
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    return "latency.png"


def _sweep(plt, results: dict, out_dir: Path) -> str:
    levels = [level for level in results["sweep"] if level["median"]]
    connections = [level["connections"] for level in levels]
    fig, ax = plt.subplots(figsize=(9, 5))
    for key, color in (("p50", "#31a354"), ("p90", "#e6550d"), ("p99", "#de2d26")):
        ax.plot(
            connections,
            [level["median"].get(f"{key}_ms") for level in levels],
            marker="o",
            color=color,
            label=f"{key} latency",
        )
    ax.set_xlabel("concurrent connections (wrk -c)")
    ax.set_ylabel("latency ms")
    ax.set_xscale("log")
    ax.set_xticks(connections, [str(c) for c in connections])
    ax.grid(alpha=0.3)
    rps_axis = ax.twinx()
    rps_axis.plot(
        connections,
        [level["median"].get("rps") for level in levels],
        marker="s",
        linestyle="--",
        color="#3182bd",
        label="requests/s",
    )
    rps_axis.set_ylabel("requests/s")
    rps_axis.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + rps_axis.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + rps_axis.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="upper left")
    ax.set_title(_title(results, "get-app-hit: latency against concurrency"))
    fig.tight_layout()
    fig.savefig(out_dir / "latency_vs_concurrency.png", dpi=110)
    plt.close(fig)
    return "latency_vs_concurrency.png"


def _overload(plt, results: dict, out_dir: Path) -> str:
    """Shedding on vs off: goodput / peak (target line 0.9) and p99 of successes at peak vs under overload."""
    rows = results["overload"]
    labels = [f"{row['kind']}\nshedding {row['shedding']}\n{row['client']}" for row in rows]
    colors = ["#31a354" if row["shedding"] == "on" else "#de2d26" for row in rows]
    xs = range(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    ratios = [row["goodput_of_peak"] or 0 for row in rows]
    left.bar(xs, ratios, color=colors)
    for x, ratio in zip(xs, ratios, strict=True):
        left.annotate(f"{ratio:.2f}", (x, ratio), ha="center", va="bottom", fontsize=8)
    left.axhline(0.9, color="black", linestyle="--", linewidth=1, label="target 0.9")
    left.set_xticks(list(xs), labels, fontsize=7)
    left.set_ylabel("goodput under 5x overload / peak goodput")
    left.set_ylim(0, 1.1)
    left.legend()
    left.grid(axis="y", alpha=0.3)
    width = 0.38
    right.bar(
        [x - width / 2 for x in xs],
        [row["p99_success_at_peak_ms"] or 0 for row in rows],
        width,
        color="#bdbdbd",
        label="p99 of 2xx at peak",
    )
    right.bar(
        [x + width / 2 for x in xs],
        [row["p99_success_ms"] or 0 for row in rows],
        width,
        color=colors,
        label="p99 of 2xx under overload",
    )
    right.set_xticks(list(xs), labels, fontsize=7)
    right.set_ylabel("ms")
    right.set_yscale("log")
    right.legend()
    right.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(_title(results, "Overload: load shedding on (green) vs off (red)"))
    fig.tight_layout()
    fig.savefig(out_dir / "overload.png", dpi=110)
    plt.close(fig)
    return "overload.png"
