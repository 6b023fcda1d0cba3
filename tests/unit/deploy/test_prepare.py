"""Preparing a stack: configs rendered from deploy/ (only ${UPPER_CASE} is ours), generated secrets, the
rate-limit allow-list, and the env file other tools read."""

import os
import re
import stat
import subprocess

import pytest

from deploy.stack import prepare
from deploy.stack.config import DEPLOY, Config, StackError


def config(tmp_path, **environ) -> Config:
    return Config.from_environ({"STACK_DIR": str(tmp_path / "stack"), **environ}, binaries={"psql": "/usr/bin/psql"})


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_only_braced_upper_case_placeholders_are_filled_and_nginx_variables_pass_through():
    text = "listen ${NGINX_LISTEN}; set $x $host; add ${host} $UPPER ${msec};"
    rendered = prepare.render("nginx/x.conf", text, {"NGINX_LISTEN": "127.0.0.1:8080"})
    assert rendered == "listen 127.0.0.1:8080; set $x $host; add ${host} $UPPER ${msec};"


def test_a_placeholder_without_a_value_is_an_error_naming_the_file_and_the_placeholder():
    with pytest.raises(StackError, match=r"deploy/redis/redis.conf uses \$\{REDIS_NOPE\}"):
        prepare.render("redis/redis.conf", "port ${REDIS_NOPE}\n", {})


def test_every_deploy_template_renders_with_the_values_of_the_native_stack(tmp_path):
    values = prepare.template_values(config(tmp_path))
    for source, _target in prepare.TEMPLATES:
        rendered = prepare.render(source, (DEPLOY / source).read_text(), values)
        assert not re.search(r"\$\{[A-Z][A-Z0-9_]*\}", rendered), source


def test_nginx_sends_reads_to_the_read_pool_and_to_the_web_pool_when_there_is_none(tmp_path):
    ports = {"STACK_WEB_PORT": "41000", "STACK_WEB_READ_PORT": "41001"}
    assert prepare.template_values(config(tmp_path, **ports))["NGINX_READ_UPSTREAM"] == "127.0.0.1:41001"
    without = prepare.template_values(config(tmp_path, STACK_READ_POOL="0", **ports))
    assert without["NGINX_READ_UPSTREAM"] == without["NGINX_UPSTREAM"] == "127.0.0.1:41000"


def test_rendering_writes_each_config_with_secrets_readable_by_the_owner_only(tmp_path):
    cfg = config(tmp_path, STACK_REDIS_PORT="41379", RABBITMQ_PASSWORD="s3cret")
    prepare.render_config(cfg)
    assert "port 41379" in (cfg.conf / "redis/redis.conf").read_text()
    assert (cfg.conf / "nginx/conf.d/items.conf").exists()
    assert "s3cret" in (cfg.conf / "rabbitmq/rabbitmq.conf").read_text()
    assert mode(cfg.conf / "rabbitmq/rabbitmq.conf") == 0o600
    assert mode(cfg.conf / "pgbouncer/userlist.txt") == 0o600
    assert mode(cfg.conf / "secret_key") == 0o600
    assert mode(cfg.conf / "redis/redis.conf") == 0o644


def test_the_secret_key_is_generated_once_and_kept_across_ups(tmp_path):
    cfg = config(tmp_path)
    prepare.render_config(cfg)
    first = (cfg.conf / "secret_key").read_text()
    prepare.render_config(cfg)
    assert (cfg.conf / "secret_key").read_text() == first
    assert len(first.strip()) >= 50


def test_the_allowlist_becomes_nginx_geo_lines_normalised_to_networks():
    geo = prepare.allowlist_geo(" 10.1.2.3/8, 127.0.0.1 ,,::1")
    assert geo.splitlines()[1:] == ["10.0.0.0/8 1;", "127.0.0.1/32 1;", "::1/128 1;"]


def test_an_allowlist_entry_that_is_not_an_address_is_refused_naming_it():
    with pytest.raises(StackError, match=r"'example\.com' is not an IP address or CIDR"):
        prepare.allowlist_geo("127.0.0.1,example.com")


def test_the_env_file_tells_other_tools_how_to_reach_the_stack(tmp_path):
    cfg = config(tmp_path, STACK_HTTP_PORT="41080", STACK_PG_PORT="41432")
    prepare.render_config(cfg)
    prepare.write_env_file(cfg)
    env_file = cfg.stack_dir / "env"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if not line.startswith("#"))
    assert values["STACK_HTTP_URL"] == "http://127.0.0.1:41080"
    assert values["DATABASE_DIRECT_URL"].endswith("@127.0.0.1:41432/items")
    assert values["SECRET_KEY"] == (cfg.conf / "secret_key").read_text().strip()
    assert values["STACK_PG_BIN"] == "/usr/bin"
    assert mode(env_file) == 0o600


def test_pgbouncer_sends_items_ro_to_the_replica_and_every_other_database_to_the_primary(tmp_path):
    cfg = config(tmp_path, STACK_PG_PORT="41432", STACK_PG_REPLICA_PORT="41433")
    prepare.render_config(cfg)
    databases = (cfg.conf / "pgbouncer/pgbouncer.ini").read_text().split("[databases]")[1].split("[pgbouncer]")[0]
    entries = [line for line in databases.splitlines() if line and not line.startswith(";")]
    assert entries == ["items_ro = host=127.0.0.1 port=41433 dbname=items", "* = host=127.0.0.1 port=41432"]
    hba = (cfg.conf / "postgres/pg_hba.conf").read_text()
    assert re.search(r"^host\s+replication\s+all\s+127\.0\.0\.1/32\s+scram-sha-256$", hba, re.M)


def test_the_compose_entrypoint_renders_every_template_exactly_as_the_native_stack_does(tmp_path):
    # Two renderers, one syntax: the entrypoint is POSIX sh + awk because the server images it runs in
    # (postgres, redis, rabbitmq, nginx) have no Python.
    values = prepare.template_values(config(tmp_path))
    env = {"PATH": os.environ["PATH"], "SECRETS_DIR": str(tmp_path / "no-secrets"), **values}
    for source, _target in prepare.TEMPLATES:
        out = tmp_path / "compose" / source
        done = subprocess.run(
            ["sh", str(DEPLOY / "compose/entrypoint.sh"), "--render", f"{DEPLOY / source}:{out}", "--", "true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert out.read_text() == prepare.render(source, (DEPLOY / source).read_text(), values), source
