"""Where the stack lives and how it is reached: paths, ports and credentials, read from the environment on call."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = REPO / ".venv" / "bin"
# Set only in the environment of processes the supervisor starts: `down` finds strays by it.
CHILD_MARK = "ITEMS_STACK_CHILD"
# PostgreSQL and PgBouncer refuse to run as root; when we are root they run as this account.
SERVICE_USER = "postgres"
# PgBouncer's database entry for the replica (deploy/pgbouncer/pgbouncer.ini), and the primary's replication slot
# the replica streams from (deploy/postgres/replica-start).
REPLICA_PGBOUNCER_DB = "items_ro"
REPLICA_SLOT = "items_replica"

PORT_DEFAULTS = {  # far from the standard ports, so a system-wide service never clashes
    "STACK_HTTP_PORT": 8080,
    "STACK_PG_PORT": 55432,
    "STACK_PG_REPLICA_PORT": 55433,  # the streaming replica (read-only; the app reaches it through PgBouncer)
    "STACK_PGBOUNCER_PORT": 56432,
    "STACK_REDIS_PORT": 56379,
    "STACK_REDIS_STATE_PORT": 56380,  # the state Redis: idempotency records and rate-limit counters, noeviction
    "STACK_AMQP_PORT": 55672,
    "STACK_AMQP_DIST_PORT": 55673,  # explicit: RabbitMQ's default (AMQP port + 20000) would overflow
    "STACK_EPMD_PORT": 54369,  # our own epmd, so we never touch (or leave behind) one on 4369
    "STACK_WEB_PORT": 58000,
    "STACK_WEB_READ_PORT": 58001,  # the read pool: GET and HEAD /items from Nginx (STACK_READ_POOL)
    "STACK_WORKER_METRICS_PORT": 59100,  # the Celery worker serves its own /metrics here
}
PORT_NAMES = tuple(PORT_DEFAULTS)


class StackError(Exception):
    """A condition the operator must fix; the command prints `stack: <message>` and exits 1."""


def port(name: str, environ: Mapping[str, str]) -> int:
    """The TCP port named by environment variable `name` (empty or unset: its default in PORT_DEFAULTS)."""
    raw = environ.get(name) or str(PORT_DEFAULTS[name])
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{name}={raw!r} is not a TCP port")
    return int(raw)


@dataclass(frozen=True)
class Config:
    """One stack's settings. `from_environ` reads them; nothing is read or looked up before that call."""

    stack_dir: Path
    ports: dict[str, int]
    binaries: dict[str, str | None]  # name -> path (None: not installed)
    pg_user: str
    pg_password: str
    pg_db: str
    mq_user: str
    mq_password: str
    ratelimit_allowlist: str
    trusted_front: str  # NGINX_TRUSTED_FRONT: CIDRs whose X-Forwarded-For/-Proto Nginx believes (empty: none)
    # STACK_REPLICA_READS=0: the replica still runs, but the app reads on the primary (REPLICA_DATABASE_URL empty),
    # as before it had one; for comparisons, e.g. loadtest.visibility with and without.
    replica_reads: bool = True
    # STACK_READ_POOL=0: no read pool; Nginx sends reads to the web pool too, as before it had one (comparisons).
    read_pool: bool = True
    read_workers: str = ""  # WEB_READ_CONCURRENCY: the read pool's gunicorn workers (empty: as the web pool's)

    def binary(self, name: str) -> str:
        """The path of a server binary; its bare name when it is not installed (`up` checks them all first)."""
        return self.binaries.get(name) or name

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, binaries: dict | None = None) -> Config:
        """Raises StackError on a port that is not one. `binaries` defaults to a search (binaries.find_all)."""
        from deploy.stack.binaries import find_all

        environ = os.environ if environ is None else environ
        return cls(
            stack_dir=Path(environ.get("STACK_DIR") or REPO / ".stack").resolve(),
            ports={name: port(name, environ) for name in PORT_NAMES},
            binaries=find_all(environ.get("STACK_BIN_PATH"), environ) if binaries is None else binaries,
            pg_user=environ.get("POSTGRES_USER", "items"),
            pg_password=environ.get("POSTGRES_PASSWORD", "items"),
            pg_db=environ.get("POSTGRES_DB", "items"),
            mq_user=environ.get("RABBITMQ_USER", "items"),
            mq_password=environ.get("RABBITMQ_PASSWORD", "items"),
            ratelimit_allowlist=environ.get("RATELIMIT_ALLOWLIST", ""),
            # The micro-cache TTL bounds how stale a reader can be; Nginx time syntax (1s, 500ms).
            trusted_front=environ.get("NGINX_TRUSTED_FRONT", ""),
            replica_reads=environ.get("STACK_REPLICA_READS", "1") != "0",
            read_pool=environ.get("STACK_READ_POOL", "1") != "0",
            read_workers=environ.get("WEB_READ_CONCURRENCY", ""),
        )

    @property
    def read_port(self) -> int:
        """Where Nginx sends GET and HEAD /items: the read pool, or the web pool when there is none."""
        return self.ports["STACK_WEB_READ_PORT" if self.read_pool else "STACK_WEB_PORT"]

    @property
    def run(self) -> Path:  # pid files, hold-down markers, the supervisor's state
        return self.stack_dir / "run"

    @property
    def log(self) -> Path:
        return self.stack_dir / "log"

    @property
    def data(self) -> Path:
        return self.stack_dir / "data"

    @property
    def conf(self) -> Path:  # rendered configs and generated secrets
        return self.stack_dir / "conf"

    @property
    def mq_node(self) -> str:
        return f"items-stack-{self.ports['STACK_AMQP_PORT']}@localhost"

    def database_url(self, port_name: str, dbname: str | None = None) -> str:
        user, password = quote(self.pg_user, safe=""), quote(self.pg_password, safe="")
        return f"postgres://{user}:{password}@127.0.0.1:{self.ports[port_name]}/{quote(dbname or self.pg_db)}"

    def broker_url(self) -> str:
        user, password = quote(self.mq_user, safe=""), quote(self.mq_password, safe="")
        return f"amqp://{user}:{password}@127.0.0.1:{self.ports['STACK_AMQP_PORT']}//"


def app_env(cfg: Config) -> dict[str, str]:
    """What every app process (migrate, gunicorn, celery) gets; also written to $STACK_DIR/env."""
    return {
        "APP_ENV": "production",
        "SECRET_KEY": (cfg.conf / "secret_key").read_text().strip(),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DATABASE_URL": cfg.database_url("STACK_PGBOUNCER_PORT"),  # through PgBouncer, always
        # The streaming replica, through PgBouncer's items_ro entry (deploy/pgbouncer/pgbouncer.ini): API reads.
        "REPLICA_DATABASE_URL": cfg.database_url("STACK_PGBOUNCER_PORT", REPLICA_PGBOUNCER_DB)
        if cfg.replica_reads
        else "",
        "REDIS_URL": f"redis://127.0.0.1:{cfg.ports['STACK_REDIS_PORT']}/0",
        "STATE_REDIS_URL": f"redis://127.0.0.1:{cfg.ports['STACK_REDIS_STATE_PORT']}/0",
        "BROKER_URL": cfg.broker_url(),
        "RATELIMIT_ALLOWLIST": cfg.ratelimit_allowlist,
        "TRUSTED_PROXIES": "127.0.0.1/32,::1/128",
    }
