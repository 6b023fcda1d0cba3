"""The component table: built on call from the config, in dependency order, and the app processes run the same
start scripts as the images and compose."""

import os
import signal

import pytest

from deploy.stack import components
from deploy.stack.binaries import find_all
from deploy.stack.config import Config, app_env
from tests.support import REPO

START_SCRIPTS = [REPO / "deploy" / role / "start" for role in ("web", "worker", "migrate")]


def config(tmp_path, **environ) -> Config:
    fake_binaries = {name: f"/opt/bin/{name}" for name in find_all("/nonexistent", {})}
    return Config.from_environ({"STACK_DIR": str(tmp_path), **environ}, binaries=fake_binaries)


def by_name(cfg: Config) -> dict[str, components.Component]:
    return {c.name: c for c in components.build(cfg)}


def test_components_start_in_dependency_order_and_only_migrate_runs_once(tmp_path):
    table = components.build(config(tmp_path))
    assert [c.name for c in table] == [
        "postgres",
        "postgres-replica",
        "pgbouncer",
        "redis",
        "redis-state",
        "epmd",
        "rabbitmq",
        "migrate",
        "gunicorn",
        "gunicorn-read",
        "celery",
        "nginx",
    ]
    assert [c.name for c in table if c.oneshot] == ["migrate"]
    assert "migrate" not in {c.name for c in components.supervised(table)}


def test_the_read_pool_is_a_gunicorn_of_its_own_unless_turned_off(tmp_path):
    table = by_name(config(tmp_path, STACK_WEB_READ_PORT="41004"))
    assert table["gunicorn-read"].env["GUNICORN_BIND"] == "127.0.0.1:41004"
    assert table["gunicorn-read"].env["PROMETHEUS_MULTIPROC_DIR"] != table["gunicorn"].env["PROMETHEUS_MULTIPROC_DIR"]
    assert "WEB_CONCURRENCY" not in table["gunicorn-read"].env  # as many workers as the web pool
    assert by_name(config(tmp_path, WEB_READ_CONCURRENCY="3"))["gunicorn-read"].env["WEB_CONCURRENCY"] == "3"
    assert "gunicorn-read" not in by_name(config(tmp_path, STACK_READ_POOL="0"))


def test_the_table_uses_the_ports_of_the_environment_it_is_built_from(tmp_path):
    table = by_name(config(tmp_path, STACK_WEB_PORT="41001", STACK_HTTP_PORT="41002", STACK_AMQP_PORT="41003"))
    assert table["gunicorn"].env["GUNICORN_BIND"] == "127.0.0.1:41001"
    assert table["nginx"].address == "http://127.0.0.1:41002/ (public)"
    assert table["rabbitmq"].env["RABBITMQ_NODE_PORT"] == "41003"
    assert table["rabbitmq"].env["RABBITMQ_NODENAME"] == "items-stack-41003@localhost"


def test_two_configs_give_two_independent_tables(tmp_path):
    first = by_name(config(tmp_path / "a", STACK_WEB_PORT="41001"))
    second = by_name(config(tmp_path / "b", STACK_WEB_PORT="41011"))
    assert first["gunicorn"].env["GUNICORN_BIND"] != second["gunicorn"].env["GUNICORN_BIND"]
    assert str(tmp_path / "a") in first["postgres"].argv[2]


def test_the_app_processes_run_the_start_scripts_with_the_virtualenv_first_on_path(tmp_path):
    table = by_name(config(tmp_path))
    assert table["gunicorn"].argv == [str(REPO / "deploy/web/start")]
    assert table["celery"].argv == [str(REPO / "deploy/worker/start")]
    assert table["migrate"].argv == [str(REPO / "deploy/migrate/start")]
    for name in ("gunicorn", "celery", "migrate"):
        assert table[name].env["PATH"].startswith(f"{REPO / '.venv' / 'bin'}:")


def test_migrations_go_to_postgresql_itself_and_the_app_through_pgbouncer(tmp_path):
    cfg = config(tmp_path, STACK_PG_PORT="41010", STACK_PGBOUNCER_PORT="41011")
    assert ":41010/" in by_name(cfg)["migrate"].env["DATABASE_URL"]
    (cfg.conf).mkdir(parents=True)
    (cfg.conf / "secret_key").write_text("k\n")
    assert ":41011/" in app_env(cfg)["DATABASE_URL"]


def test_postgres_and_nginx_stop_on_their_graceful_signals(tmp_path):
    table = by_name(config(tmp_path))
    assert table["postgres"].stop_signal == signal.SIGINT  # "fast": SIGTERM would wait for idle clients
    assert table["nginx"].stop_signal == signal.SIGQUIT
    assert table["postgres"].as_service_user and table["pgbouncer"].as_service_user


@pytest.mark.parametrize("script", START_SCRIPTS, ids=lambda p: p.parent.name)
def test_each_start_script_is_strict_shell_ending_in_exec(script):
    assert os.access(script, os.X_OK)
    lines = [line for line in script.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert lines[0] == "set -euo pipefail"
    assert lines[-1].startswith("exec ")


def test_the_worker_pool_size_is_left_to_the_one_setting():
    # CELERY_WORKER_CONCURRENCY in project/settings.py; a --concurrency here would make a second value.
    assert "--concurrency" not in (REPO / "deploy/worker/start").read_text()


def test_the_replica_is_a_base_backup_streaming_from_its_slot_and_the_app_reads_through_items_ro(tmp_path):
    cfg = config(tmp_path, STACK_PG_PORT="41010", STACK_PG_REPLICA_PORT="41012", STACK_PGBOUNCER_PORT="41011")
    replica = by_name(cfg)["postgres-replica"]
    assert replica.argv[0] == str(REPO / "deploy/postgres/replica-start")
    assert replica.argv[-2:] == ["-c", "port=41012"]
    assert (replica.env["PRIMARY_PORT"], replica.env["REPLICATION_SLOT"]) == ("41010", "items_replica")
    assert replica.as_service_user and replica.stop_signal == signal.SIGINT
    cfg.conf.mkdir(parents=True)
    (cfg.conf / "secret_key").write_text("k\n")
    assert app_env(cfg)["REPLICA_DATABASE_URL"].endswith(":41011/items_ro")  # PgBouncer's entry for it
    without = config(tmp_path, STACK_REPLICA_READS="0")
    assert app_env(without)["REPLICA_DATABASE_URL"] == ""  # the replica runs; the app reads on the primary
