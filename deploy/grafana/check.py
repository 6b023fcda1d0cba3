"""Offline check of the Grafana dashboards: every panel's query must be PromQL that Prometheus accepts.

`python -m deploy.grafana.check [DASHBOARD.json ...]` (run by `make observability-check`): reads each dashboard,
substitutes Grafana's variables (its built-in intervals and the dashboard's template variables), writes every
query into a temporary recording-rule file and runs `promtool check rules` on it, which parses each expression
as Prometheus would. Also refuses panels without a query, panels on another data source than the provisioned
one, and repeated panel ids. `metric_names` is what tests/unit/deploy/test_observability.py uses to hold every
name queried against what the service and its exporters export.
"""

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "prometheus"  # provisioning/datasources/prometheus.yml

# Grafana's built-in variables, as any valid duration or number: promtool checks syntax, not values.
BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__interval_ms": "60000", "__range_s": "3600"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*,)?\s*\w+\s*\)\s*$")

# What is not a metric name in an expression, once strings, matchers, ranges and grouping clauses are gone.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
_STRIP = [
    re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'),  # string literals
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # ranges and subqueries
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),  # label lists
]
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


class DashboardError(Exception):
    pass


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, those inside (collapsed) rows too; rows themselves are not panels with queries."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def variable_values(dashboard: dict) -> dict[str, str]:
    """A stand-in value per template variable: its "All" regex (a valid matcher value), else its current value."""
    values = dict(BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        current = variable.get("current", {}).get("value")
        values[variable["name"]] = variable.get("allValue") or (current if isinstance(current, str) else ".*")
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise DashboardError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, variables substituted."""
    values = variable_values(dashboard)
    found, seen_ids = [], set()
    for panel in panels(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in seen_ids:
            raise DashboardError(f"{where}: its id is used by another panel")
        seen_ids.add(panel.get("id"))
        targets = [t for t in panel.get("targets", []) if t.get("expr", "").strip()]
        if not targets:
            raise DashboardError(f"{where}: no query")
        for source in [panel, *targets]:
            uid = (source.get("datasource") or {}).get("uid", DATASOURCE_UID)
            if uid != DATASOURCE_UID:
                raise DashboardError(f"{where}: data source {uid!r}, not the provisioned {DATASOURCE_UID!r}")
        found += [(f"{where} target {t.get('refId')}", substitute(t["expr"], values)) for t in targets]
    return found


def variable_metric_names(dashboard: dict) -> set[str]:
    """Metric names the template variables' label_values(metric, label) queries read."""
    names = set()
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        match = _LABEL_VALUES.match(query)
        if not match:
            raise DashboardError(f"variable {variable['name']}: only label_values(metric, label) is checked: {query!r}")
        if match.group(1):
            names.add(match.group(1))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and durations left out)."""
    for pattern in _STRIP:
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        name, call = match.groups()
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def promtool_check(exprs: list[tuple[str, str]], promtool: str = "promtool") -> subprocess.CompletedProcess:
    """`promtool check rules` on the expressions as recording rules (JSON is YAML, so no YAML writer is needed)."""
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, (_, expr) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="dashboard-queries-") as file:
        json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, file, indent=1)
        file.flush()
        return subprocess.run([promtool, "check", "rules", file.name], capture_output=True, text=True, check=False)


def check(path: Path, promtool: str = "promtool") -> int:
    dashboard = json.loads(path.read_text())
    exprs = queries(dashboard)
    variable_metric_names(dashboard)
    result = promtool_check(exprs, promtool)
    if result.returncode != 0:
        # promtool names a rule by its index: map it back to the panel (all of them if it names none).
        failed = {int(n) for n in re.findall(r"dashboard:query_(\d+)", result.stdout + result.stderr)}
        named = [(n, where, expr) for n, (where, expr) in enumerate(exprs) if n in failed or not failed]
        lines = "\n".join(f"  dashboard:query_{n} is {where}: {expr}" for n, where, expr in named)
        raise DashboardError(f"promtool rejected a query:\n{result.stdout}{result.stderr}\n{lines}")
    return len(exprs)


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or sorted(DASHBOARDS.glob("*.json"))
    if not paths:
        print("dashboards: none found", file=sys.stderr)
        return 1
    for path in paths:
        try:
            count = check(path)
        except (DashboardError, json.JSONDecodeError) as exc:
            print(f"dashboards: {path}: {exc}", file=sys.stderr)
            return 1
        print(f"dashboards: {path.name}: {count} queries accepted by promtool")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
