"""The component table: every process of the stack, in dependency order, with its health check. Built on call."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack.config import DEPLOY, REPLICA_SLOT, REPO, VENV_BIN, Config
from deploy.stack.logs import logged_since_start
from deploy.stack.prepare import create_database

# One start script per app process: the images and compose call the same ones, so each command line is written once.
WEB_START = DEPLOY / "web" / "start"
WORKER_START = DEPLOY / "worker" / "start"
MIGRATE_START = DEPLOY / "migrate" / "start"
REPLICA_START = DEPLOY / "postgres" / "replica-start"


@dataclass
class Component:
    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    as_service_user: bool = False
    stop_signal: int = signal.SIGTERM
    start_timeout_s: float = 30
    stop_timeout_s: float = 20
    oneshot: bool = False  # runs to completion once per `up` (migrations) instead of being supervised
    # Run once it is first healthy, before the next component starts; returns an error message or None.
    after_healthy: Callable[[], str | None] | None = None


# --- Health checks: each answers "is it serving?" within a second or two -------------------------------------


def tcp_exchange(port: int, send: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            if send:
                sock.sendall(send)
            return not expect or sock.recv(len(expect)) == expect
    except OSError:
        return False


def http_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def pg_ready(cfg: Config, port: int) -> bool:
    command = [cfg.binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", cfg.pg_user, "-t", "2"]
    return subprocess.run(command, check=False).returncode == 0


# --- The table -----------------------------------------------------------------------------------------------


def start_script_env() -> dict[str, str]:
    """The start scripts run `gunicorn`, `celery` and `python` from PATH: the virtualenv's come first."""
    return {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def build(cfg: Config) -> list[Component]:
    """Every component in dependency order: each starts only once the ones before it are healthy."""
    ports, binary, conf, data = cfg.ports, cfg.binary, cfg.conf, cfg.data
    pg, bouncer, redis = ports["STACK_PG_PORT"], ports["STACK_PGBOUNCER_PORT"], ports["STACK_REDIS_PORT"]
    replica = ports["STACK_PG_REPLICA_PORT"]
    pg_bin_dir = os.path.dirname(binary("postgres"))
    redis_state = ports["STACK_REDIS_STATE_PORT"]
    amqp, epmd, web = ports["STACK_AMQP_PORT"], ports["STACK_EPMD_PORT"], ports["STACK_WEB_PORT"]
    http_, worker_metrics = ports["STACK_HTTP_PORT"], ports["STACK_WORKER_METRICS_PORT"]
    web_read = ports["STACK_WEB_READ_PORT"]
    erlang_env = {"ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": "127.0.0.1"}
    postgres_conf = f"config_file={conf / 'postgres/postgresql.conf'}"
    postgres_hba = f"hba_file={conf / 'postgres/pg_hba.conf'}"
    nginx_conf, nginx_globals = str(conf / "nginx/nginx.conf"), f"daemon off; pid {data / 'nginx/nginx.pid'};"
    return [
        Component(
            name="postgres",
            argv=[binary("postgres"), "-D", str(data / "postgres"), "-c", postgres_conf, "-c", postgres_hba],
            healthy=lambda: pg_ready(cfg, pg),
            address=f"127.0.0.1:{pg} (direct: migrations and psql only)",
            cwd=data / "postgres",
            as_service_user=True,
            stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM ("smart") waits for PgBouncer's idle connections
            after_healthy=lambda: create_database(cfg),
        ),
        Component(
            name="postgres-replica",
            # The same config files as the primary, on its own port: a hot standby streaming from the slot.
            argv=[str(REPLICA_START), "-c", postgres_conf, "-c", postgres_hba, "-c", f"port={replica}"],
            healthy=lambda: pg_ready(cfg, replica),
            address=f"127.0.0.1:{replica} (streaming replica; REPLICA_DATABASE_URL via PgBouncer's items_ro)",
            env={
                # Debian keeps pg_basebackup and postgres out of PATH: the primary's own directory first.
                "PATH": ":".join(filter(None, [pg_bin_dir, os.environ.get("PATH", "/usr/bin:/bin")])),
                # A directory below one the service account owns (prepare.init_replica_dir): the base backup
                # goes to PGDATA.partial beside it first.
                "PGDATA": str(data / "postgres-replica" / "pgdata"),
                "PRIMARY_HOST": "127.0.0.1",
                "PRIMARY_PORT": str(pg),
                "POSTGRES_USER": cfg.pg_user,
                "POSTGRES_PASSWORD": cfg.pg_password,
                "REPLICATION_SLOT": REPLICA_SLOT,
            },
            cwd=data / "postgres-replica",
            as_service_user=True,
            stop_signal=signal.SIGINT,
            start_timeout_s=120,  # the first start copies the primary
        ),
        Component(
            name="pgbouncer",
            argv=[binary("pgbouncer"), str(conf / "pgbouncer/pgbouncer.ini")],
            healthy=lambda: pg_ready(cfg, bouncer),
            address=f"127.0.0.1:{bouncer} (DATABASE_URL)",
            cwd=data / "postgres",
            as_service_user=True,
        ),
        Component(
            name="redis",
            argv=[binary("redis-server"), str(conf / "redis/redis.conf")],
            healthy=lambda: tcp_exchange(redis, b"PING\r\n", b"+PONG"),
            address=f"127.0.0.1:{redis} (REDIS_URL: the response cache, evicts when full)",
        ),
        Component(
            name="redis-state",
            # The same file, with what makes it the state store: nothing is ever evicted (a full store refuses
            # writes, and a POST with an Idempotency-Key is then a 503, never a duplicate).
            argv=[
                binary("redis-server"),
                str(conf / "redis/redis.conf"),
                *("--port", str(redis_state), "--dir", str(data / "redis-state")),
                *("--maxmemory-policy", "noeviction"),
            ],
            healthy=lambda: tcp_exchange(redis_state, b"PING\r\n", b"+PONG"),
            address=f"127.0.0.1:{redis_state} (STATE_REDIS_URL: idempotency keys, rate-limit counters)",
        ),
        Component(
            name="epmd",
            argv=[binary("epmd"), "-port", str(epmd), "-address", "127.0.0.1"],
            healthy=lambda: tcp_exchange(epmd, b"", b""),
            address=f"127.0.0.1:{epmd} (Erlang port mapper for RabbitMQ)",
            env=erlang_env,
        ),
        Component(
            name="rabbitmq",
            argv=[binary("rabbitmq-server")],
            # The broker opens its AMQP listener last in its boot, so a protocol greeting means ready.
            healthy=lambda: tcp_exchange(amqp, b"AMQP\x00\x00\x09\x01", b"\x01"),
            address=f"127.0.0.1:{amqp} (node {cfg.mq_node})",
            env={
                **erlang_env,
                "RABBITMQ_NODENAME": cfg.mq_node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(amqp),
                "RABBITMQ_DIST_PORT": str(ports["STACK_AMQP_DIST_PORT"]),
                "RABBITMQ_CONFIG_FILE": str(conf / "rabbitmq/rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(conf / "rabbitmq/advanced.config"),  # absent: none
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(conf / "rabbitmq/enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not the system-wide rabbitmq-env.conf and its NODENAME
                "RABBITMQ_MNESIA_BASE": str(data / "rabbitmq/mnesia"),
                "RABBITMQ_LOG_BASE": str(cfg.log / "rabbitmq"),
                "RABBITMQ_PID_FILE": str(data / "rabbitmq/beam.pid"),
                # Our epmd is supervised above; the node must not spawn a daemon epmd that `down` didn't start.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
                "HOME": str(data / "rabbitmq"),  # the Erlang cookie lives here, not in root's home
            },
            start_timeout_s=90,
            stop_timeout_s=30,
        ),
        Component(
            name="migrate",
            argv=[str(MIGRATE_START)],
            healthy=lambda: True,
            # Once, against PostgreSQL itself: DDL and advisory locks do not belong on a transaction pool.
            env={**start_script_env(), "DATABASE_URL": cfg.database_url("STACK_PG_PORT")},
            start_timeout_s=180,
            oneshot=True,
        ),
        _gunicorn(cfg, "gunicorn", web, "prometheus", what="gunicorn, uvicorn workers"),
        *(
            [
                _gunicorn(
                    cfg,
                    "gunicorn-read",
                    web_read,
                    "prometheus-read",
                    what="the read pool: GET and HEAD /items",
                    workers=cfg.read_workers,
                )
            ]
            if cfg.read_pool
            else []
        ),
        Component(
            name="celery",
            argv=[str(WORKER_START)],
            healthy=lambda: logged_since_start(cfg.log, "celery", b" ready."),
            address=f"metrics on http://127.0.0.1:{worker_metrics}/metrics",
            env={**start_script_env(), "WORKER_METRICS_PORT": str(worker_metrics), "WORKER_METRICS_ADDR": "127.0.0.1"},
            start_timeout_s=60,
            stop_timeout_s=30,
        ),
        Component(
            name="nginx",
            argv=[binary("nginx"), "-p", f"{data / 'nginx'}/", "-c", nginx_conf, "-e", "stderr", "-g", nginx_globals],
            healthy=lambda: http_status(http_, "/healthz") is not None,
            address=f"http://127.0.0.1:{http_}/ (public)",
            stop_signal=signal.SIGQUIT,  # graceful: finish in-flight requests
        ),
    ]


def _gunicorn(cfg: Config, name: str, port: int, metrics_dir: str, *, what: str, workers: str = "") -> Component:
    """The web pool ("gunicorn") or the read pool ("gunicorn-read"): the same app and start script. `workers`:
    how many, when not WEB_CONCURRENCY's."""
    env = {
        **start_script_env(),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        # Only this gunicorn's workers share this dir (wiped at its start); the Celery worker and the other pool
        # serve their own metrics, so their counters are neither summed in here nor wiped by this one's restart.
        "PROMETHEUS_MULTIPROC_DIR": str(cfg.run / metrics_dir),
    }
    if workers:
        env["WEB_CONCURRENCY"] = workers
    return Component(
        name=name,
        argv=[str(WEB_START)],
        healthy=lambda: http_status(port, "/healthz") == 200,
        address=f"127.0.0.1:{port} ({what})",
        env=env,
        start_timeout_s=60,
        stop_timeout_s=30,  # > graceful_timeout in deploy/web/gunicorn.conf.py
    )


def supervised(components: list[Component]) -> list[Component]:
    return [c for c in components if not c.oneshot]
