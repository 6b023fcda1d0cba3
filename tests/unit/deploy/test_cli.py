"""`python -m deploy.stack` as an operator runs it: one-line answers, usage on a wrong command, and nothing
started or written by the commands that only look."""

import os
import stat
import subprocess
import sys

from tests.support import REPO


def stack(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.stack", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_names_every_missing_server_and_what_to_install_in_one_line():
    check = stack("check", STACK_BIN_PATH="/nonexistent")
    assert check.returncode == 1
    assert check.stdout.count("\n") == 1
    assert check.stdout.startswith("missing initdb, postgres, ")
    assert check.stdout.rstrip().endswith(
        ": apt-get install postgresql pgbouncer redis-server rabbitmq-server nginx (or: make system-deps)"
    )


def test_check_finds_servers_on_stack_bin_path(tmp_path):
    for name in ("initdb", "postgres", "pg_isready", "createdb", "psql", "pgbouncer", "redis-server"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(stat.S_IRWXU)
    check = stack("check", STACK_BIN_PATH=str(tmp_path))
    assert check.returncode == 1
    assert check.stdout.startswith("missing rabbitmq-server, epmd, nginx: ")


def test_a_wrong_command_prints_the_usage_and_exits_2():
    for args in ([], ["restart"], ["stop"], ["status", "extra"]):
        result = stack(*args)
        assert result.returncode == 2, args
        assert result.stderr.startswith("usage: python -m deploy.stack up | down | status")


def test_a_port_that_is_not_one_fails_the_command_naming_it(tmp_path):
    result = stack("status", STACK_DIR=str(tmp_path), STACK_AMQP_PORT="5672x")
    assert result.returncode == 1
    assert result.stderr.strip() == "stack: STACK_AMQP_PORT='5672x' is not a TCP port"


def test_status_of_a_stack_that_never_ran_says_so_and_writes_nothing(tmp_path):
    state = tmp_path / "state"
    result = stack("status", STACK_DIR=str(state))
    assert result.returncode == 3
    assert result.stdout.startswith(f"supervisor  not running  ({state})")
    assert "  nginx      down" in result.stdout
    assert not state.exists()


def test_stop_on_a_stack_that_is_not_up_is_refused(tmp_path):
    result = stack("stop", "redis", STACK_DIR=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == "stack: the stack is not up (python -m deploy.stack up)"
    assert not (tmp_path / "run").exists()


def test_starting_an_unknown_component_is_refused_naming_the_ones_there_are(tmp_path):
    result = stack("start", "mysql", STACK_DIR=str(tmp_path))
    assert result.returncode == 1
    expected = (
        "unknown component 'mysql'; one of: "
        "postgres, postgres-replica, pgbouncer, redis, redis-state, epmd, rabbitmq, gunicorn"
    )
    assert expected in result.stderr
