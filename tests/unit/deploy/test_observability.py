"""Dashboards, alerts and units stay true to what runs: every metric they query is one the service or a scraped
exporter exports, every alert has a unit test that fires it, and the systemd units start what the stack starts.

The syntax checks themselves (promtool, systemd-analyze) are `make observability-check`; these tests need neither
tool, except the one that proves the dashboard check rejects a broken query.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from django_prometheus.middleware import Metrics
from prometheus_client import REGISTRY

import app.metrics
import deploy.grafana.check as dashboards
import project.metrics
from tests import support
from tests.support import REPO

PROMETHEUS = REPO / "deploy/prometheus"
SYSTEMD = REPO / "deploy/systemd"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))
CONFIGS = [PROMETHEUS / "prometheus.yml", PROMETHEUS / "prometheus.systemd.yml"]

# What the exporters export, per scrape job, as far as the panels and alerts use it. Checked against the running
# exporters when this was written (pgbouncer_exporter 0.10.2, redis_exporter 1.45, RabbitMQ 3.10 /metrics/detailed,
# blackbox_exporter 0.23/0.26, postgres_exporter 0.17); keep it to names something here queries.
EXPORTED = {
    "*": {"up"},  # Prometheus's own, for every target
    "items-readyz": {"probe_success"},
    "rabbitmq-queues": {
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_consumers",
    },
    "redis": {
        "redis_up",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "redis_keyspace_hits_total",
        "redis_keyspace_misses_total",
        "redis_connected_clients",
    },
    "pgbouncer": {
        "pgbouncer_up",
        "pgbouncer_pools_client_active_connections",
        "pgbouncer_pools_client_waiting_connections",
        "pgbouncer_pools_client_maxwait_seconds",
        "pgbouncer_pools_server_active_connections",
        "pgbouncer_pools_server_idle_connections",
        "pgbouncer_pools_server_used_connections",
        "pgbouncer_stats_sql_transactions_pooled_total",
    },
    # postgres_exporter >= 0.13 (compose pins 0.15): 0 on a primary; the replica-lag alert waits for a replica.
    "postgres": {"pg_up", "pg_replication_lag_seconds", "pg_replication_is_replica"},
}
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"]}


def service_metric_names() -> set[str]:
    """Every series name the web and worker processes can export: their registry, as the code defines it."""
    assert app.metrics and project.metrics  # imported for their metrics, registered at import
    Metrics.get_instance()  # django-prometheus's request metrics, created with its first middleware
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, [""])}
    return names


def rules() -> list[dict]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def alert_tests() -> list[dict]:
    return [
        test
        for path in sorted((PROMETHEUS / "tests").glob("*.yml"))
        for test in yaml.safe_load(path.read_text())["tests"]
    ]


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard query and every rule."""
    found = []
    for path in DASHBOARD_FILES:
        found += [(f"{path.name} {where}", expr) for where, expr in dashboards.queries(json.loads(path.read_text()))]
    return found + [(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in rules()]


def queried_metric_names() -> dict[str, str]:
    """Each metric name queried anywhere, with one place that queries it."""
    names: dict[str, str] = {}
    for where, expr in expressions():
        names.update(dict.fromkeys(dashboards.metric_names(expr) - names.keys(), where))
    for path in DASHBOARD_FILES:
        variables = dashboards.variable_metric_names(json.loads(path.read_text()))
        names.update(dict.fromkeys(variables - names.keys(), f"{path.name} variables"))
    return names


def scrape_jobs(config: Path) -> set[str]:
    return {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}


def unit(name: str) -> dict[str, list[str]]:
    """A unit file as {"Section.Key": [values...]}; repeated keys (After=, Wants=) accumulate, as in systemd."""
    parsed: dict[str, list[str]] = {}
    section = ""
    for line in (SYSTEMD / name).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            parsed.setdefault(f"{section}.{key}", []).extend(value.split() if key in DEPENDENCY_KEYS else [value])
    return parsed


DEPENDENCY_KEYS = {"After", "Before", "Wants", "Requires", "PartOf", "WantedBy"}
DISTRIBUTION_UNITS = {"postgresql.service", "pgbouncer.service", "redis-server.service", "rabbitmq-server.service"}


# --- metric names -----------------------------------------------------------------------------------------------


def test_every_metric_a_panel_or_alert_queries_is_exported_by_the_service_or_an_exporter():
    known = service_metric_names() | set().union(*EXPORTED.values())
    unknown = {name: where for name, where in queried_metric_names().items() if name not in known}
    assert unknown == {}


def test_the_service_metrics_the_dashboard_relies_on_are_found_in_the_code():
    # Guards the test above against a registry that would accept anything: these come from app/ and project/.
    names = service_metric_names()
    assert {"items_shed_total", "items_stored_total", "items_publish_seconds_bucket", "items_queue_depth"} <= names
    assert "django_http_responses_total_by_status_view_method_total" in names
    assert "items_no_such_metric_total" not in names


def test_every_exporter_metric_listed_is_queried_somewhere():
    queried = set(queried_metric_names())
    assert {name for names in EXPORTED.values() for name in names} - queried == set()


def test_both_prometheus_configs_scrape_every_job_whose_metrics_are_queried():
    needed = {job for job in EXPORTED if job != "*"} | {"items-web", "items-worker"}
    for config in CONFIGS:
        assert needed - scrape_jobs(config) == set(), config.name


def test_every_job_an_expression_names_is_scraped_by_both_configs():
    named = {job for _, expr in expressions() for job in re.findall(r'\bjob="([^"]+)"', expr)}
    assert named, "no expression names a job: the test would prove nothing"
    for config in CONFIGS:
        assert named - scrape_jobs(config) == set(), config.name


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (view, status) (rate(django_x_total{view=~"items|item"}[5m]))', {"django_x_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval])))", {"a_bucket"}),
        ("a > 1e3 and on() (sum(rate(b[5m])) or on() vector(0)) == 0", {"a", "b"}),
        ("deriv(sum(q{queue='items'})[15m:1m]) offset 5m", {"q"}),
        ("up == 0 unless ignoring(instance) group_left(job) c:recorded", {"up", "c:recorded"}),
    ],
)
def test_metric_names_are_read_from_an_expression_without_functions_labels_or_durations(expr, names):
    assert dashboards.metric_names(expr) == names


# --- dashboards -------------------------------------------------------------------------------------------------


def test_every_dashboard_panel_has_a_query_on_the_provisioned_data_source():
    provisioned = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert [source["uid"] for source in provisioned["datasources"]] == [dashboards.DATASOURCE_UID]
    assert DASHBOARD_FILES
    for path in DASHBOARD_FILES:
        assert len(dashboards.queries(json.loads(path.read_text()))) >= 20, path.name


def test_dashboard_panels_fit_the_24_column_grid_without_overlapping():
    for path in DASHBOARD_FILES:
        taken: dict[tuple[int, int], str] = {}
        for panel in json.loads(path.read_text())["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            for cell in (
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            ):
                assert cell not in taken, f"{panel['title']!r} overlaps {taken[cell]!r}"
                taken[cell] = panel["title"]


def test_grafana_variables_are_replaced_by_values_promql_accepts():
    dashboard = {"templating": {"list": [{"name": "view", "allValue": ".*"}]}}
    values = dashboards.variable_values(dashboard)
    assert (
        dashboards.substitute('rate(x{view=~"$view", v="${view}"}[$__rate_interval])', values)
        == 'rate(x{view=~".*", v=".*"}[1m])'
    )
    with pytest.raises(dashboards.DashboardError, match="unknown variable"):
        dashboards.substitute("rate(x[$nope])", values)


def test_a_panel_without_a_query_or_on_another_data_source_is_refused():
    empty = {"panels": [{"id": 1, "type": "timeseries", "targets": [{"refId": "A", "expr": " "}]}]}
    with pytest.raises(dashboards.DashboardError, match="no query"):
        dashboards.queries(empty)
    foreign = {"panels": [{"id": 1, "datasource": {"uid": "loki"}, "targets": [{"refId": "A", "expr": "up"}]}]}
    with pytest.raises(dashboards.DashboardError, match="data source 'loki'"):
        dashboards.queries(foreign)


def test_the_dashboard_check_rejects_a_query_prometheus_cannot_parse(tmp_path):
    support.require(
        shutil.which("promtool") is not None, "promtool (make system-deps)", needed_by="make observability-check"
    )

    def write(expr: str) -> Path:
        path = tmp_path / "dashboard.json"
        path.write_text(
            json.dumps({"panels": [{"id": 7, "title": "broken", "targets": [{"refId": "A", "expr": expr}]}]})
        )
        return path

    with pytest.raises(dashboards.DashboardError, match="panel 7 'broken'"):
        dashboards.check(write("sum(rate(items_shed_total[5m])"))
    path = write("sum(rate(items_shed_total[5m]))")
    assert dashboards.check(path) == 1


# --- alerts -----------------------------------------------------------------------------------------------------


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent():
    fired: set[str] = set()
    silent: set[str] = set()
    for test in alert_tests():
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert len(alerts) >= 10
    assert alerts - fired == set(), "alerts never shown to fire"
    assert alerts - silent == set(), "alerts never shown to stay silent"


def test_every_alert_says_how_bad_and_what_is_wrong():
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_prometheus_loads_the_rule_files_in_both_configs():
    for config in CONFIGS:
        patterns = yaml.safe_load(config.read_text())["rule_files"]
        loaded = {path for pattern in patterns for path in config.parent.glob(pattern)}
        assert loaded == set(RULE_FILES), config.name


# --- systemd units ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "script"), [("web", "web"), ("worker", "worker"), ("migrate", "migrate")])
def test_each_unit_runs_the_start_script_the_stack_and_compose_run(name, script):
    exec_start = unit(f"items-{name}.service")["Service.ExecStart"][0]
    assert f"/opt/items/deploy/{script}/start" in exec_start.split()
    assert (REPO / f"deploy/{script}/start").stat().st_mode & 0o111


@pytest.mark.parametrize("name", ["items-web.service", "items-worker.service"])
def test_web_and_worker_start_after_the_migrations_and_the_distribution_servers_but_never_stop_with_them(name):
    parsed = unit(name)
    assert set(parsed["Unit.After"]) >= DISTRIBUTION_UNITS
    assert "items-migrate.service" in parsed["Unit.Requires"] and "items-migrate.service" in parsed["Unit.After"]
    assert not DISTRIBUTION_UNITS & set(parsed.get("Unit.Requires", []) + parsed.get("Unit.BindsTo", []))
    assert parsed["Install.WantedBy"] == ["items.target"] and parsed["Unit.PartOf"] == ["items.target"]


def test_the_web_unit_starts_before_nginx_and_gives_gunicorn_its_metrics_dir():
    parsed = unit("items-web.service")
    assert "nginx.service" in parsed["Unit.Before"]
    environment = dict(value.split("=", 1) for value in parsed["Service.Environment"])
    assert environment["PROMETHEUS_MULTIPROC_DIR"].startswith("/run/" + parsed["Service.RuntimeDirectory"][0] + "/")


def test_the_environment_example_sets_every_variable_the_units_expand():
    example = {
        line.split("=", 1)[0]
        for line in (SYSTEMD / "items.env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    expanded = set(re.findall(r"\$\{(\w+)\}", "".join(path.read_text() for path in SYSTEMD.glob("*.service"))))
    assert expanded and expanded <= example
    assert {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "SECRET_KEY", "WORKER_METRICS_PORT"} <= example
