"""The native production stack on one host: `up`, `down`, `status`, `stop NAME`, `start NAME` (see usage below)."""

from __future__ import annotations

import contextlib
import glob
import http.client
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

USAGE = """usage: stack.py up | down | status | stop NAME | start NAME | check

  up          start every component in dependency order, each health-checked, under one supervisor
  down        stop exactly what `up` started, in reverse order, and verify no process is left
  status      list components, pids and whether they are alive
  stop NAME   hold one component down (the supervisor will not restart it)
  start NAME  let the supervisor start it again, and wait until it is healthy
  check       exit 0 when every server binary is installed, else print the one line saying what to install

State lives in $STACK_DIR (default <repo>/.stack): run/NAME.pid, log/NAME.log, data/, conf/ and env."""

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
STACK_DIR = Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()
RUN, LOG, DATA, CONF = (STACK_DIR / name for name in ("run", "log", "data", "conf"))
VENV_BIN = REPO / ".venv" / "bin"
# Set only in the environment of processes the supervisor starts: `down` finds strays by it.
CHILD_MARK = "ITEMS_STACK_CHILD"
# PostgreSQL and PgBouncer refuse to run as root; when we are root they run as this account.
SERVICE_USER = "postgres"
APT_PACKAGES = "postgresql pgbouncer redis-server rabbitmq-server nginx"

PORT_DEFAULTS = {  # far from the standard ports, so a system-wide service never clashes
    "STACK_HTTP_PORT": 8080,
    "STACK_PG_PORT": 55432,
    "STACK_PGBOUNCER_PORT": 56432,
    "STACK_REDIS_PORT": 56379,
    "STACK_AMQP_PORT": 55672,
    "STACK_AMQP_DIST_PORT": 55673,  # explicit: RabbitMQ's default (AMQP port + 20000) would overflow
    "STACK_EPMD_PORT": 54369,  # our own epmd, so we never touch (or leave behind) one on 4369
    "STACK_WEB_PORT": 58000,
    "STACK_WORKER_METRICS_PORT": 59100,  # the Celery worker serves its own /metrics here
}


def port(name: str) -> int:
    raw = os.environ.get(name) or str(PORT_DEFAULTS[name])
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"stack: {name}={raw!r} is not a TCP port")
    return int(raw)


PG_USER = os.environ.get("POSTGRES_USER", "items")
PG_PASSWORD = os.environ.get("POSTGRES_PASSWORD", "items")
PG_DB = os.environ.get("POSTGRES_DB", "items")
MQ_USER = os.environ.get("RABBITMQ_USER", "items")
MQ_PASSWORD = os.environ.get("RABBITMQ_PASSWORD", "items")
MQ_NODE = f"items-stack-{port('STACK_AMQP_PORT')}@localhost"


# Where the servers are looked for: STACK_BIN_PATH (colon-separated) replaces the default search, e.g. for
# servers installed outside the distribution's directories.
BIN_PATH = os.environ.get("STACK_BIN_PATH")


def find_binary(name: str, *candidates: str) -> str | None:
    if BIN_PATH is not None:
        return shutil.which(name, path=BIN_PATH)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def pg_bin(name: str) -> str | None:
    # Debian keeps the PostgreSQL server tools out of PATH, one directory per major version.
    newest_first = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True)
    return find_binary(name, *(f"{d}/{name}" for d in newest_first))


BINARIES = {
    "initdb": pg_bin("initdb"),
    "postgres": pg_bin("postgres"),
    "pg_isready": pg_bin("pg_isready"),
    "createdb": pg_bin("createdb"),
    "psql": pg_bin("psql"),
    "pgbouncer": find_binary("pgbouncer"),
    "redis-server": find_binary("redis-server"),
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that su's to the system account and drops our env.
    "rabbitmq-server": find_binary("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server"),
    "epmd": find_binary("epmd"),
    "nginx": find_binary("nginx"),
}


# --- Health checks: each answers "is it serving?" within a second or two -------------------------------------


def tcp_exchange(port_: int, send: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port_), timeout=2) as sock:
            if send:
                sock.sendall(send)
            return not expect or sock.recv(len(expect)) == expect
    except OSError:
        return False


def http_status(port_: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port_, timeout=3)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def pg_ready(port_: int) -> bool:
    command = [BINARIES["pg_isready"], "-q", "-h", "127.0.0.1", "-p", str(port_), "-U", PG_USER, "-t", "2"]
    return subprocess.run(command, check=False).returncode == 0


START_MARKER = b"=== stack.py: starting %s"  # written to NAME.log before each start of NAME


def logged_since_start(name: str, text: bytes) -> bool:
    """Whether the component wrote `text` after the supervisor's last start marker in its log."""
    try:
        with open(LOG / f"{name}.log", "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 1_000_000))
            tail = log.read()
    except OSError:
        return False
    marker = tail.rfind(START_MARKER % name.encode())
    return marker >= 0 and text in tail[marker:]


# --- Components ----------------------------------------------------------------------------------------------


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


def database_url(port_: int) -> str:
    return f"postgres://{quote(PG_USER, safe='')}:{quote(PG_PASSWORD, safe='')}@127.0.0.1:{port_}/{quote(PG_DB)}"


def app_env() -> dict[str, str]:
    """What every app process (migrate, gunicorn, celery) gets; also written to $STACK_DIR/env."""
    return {
        "APP_ENV": "production",
        "SECRET_KEY": (CONF / "secret_key").read_text().strip(),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DATABASE_URL": database_url(port("STACK_PGBOUNCER_PORT")),  # through PgBouncer, always
        "REDIS_URL": f"redis://127.0.0.1:{port('STACK_REDIS_PORT')}/0",
        "BROKER_URL": f"amqp://{quote(MQ_USER, safe='')}:{quote(MQ_PASSWORD, safe='')}"
        f"@127.0.0.1:{port('STACK_AMQP_PORT')}//",
        "RATELIMIT_ALLOWLIST": os.environ.get("RATELIMIT_ALLOWLIST", ""),
        "TRUSTED_PROXIES": "127.0.0.1/32,::1/128",
    }


def components() -> list[Component]:
    """Every component in dependency order: each starts only once the ones before it are healthy."""
    pg, bouncer, redis = port("STACK_PG_PORT"), port("STACK_PGBOUNCER_PORT"), port("STACK_REDIS_PORT")
    amqp, epmd = port("STACK_AMQP_PORT"), port("STACK_EPMD_PORT")
    web, http_, worker_metrics = port("STACK_WEB_PORT"), port("STACK_HTTP_PORT"), port("STACK_WORKER_METRICS_PORT")
    erlang_env = {"ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": "127.0.0.1"}
    postgres_conf = f"config_file={CONF / 'postgres/postgresql.conf'}"
    postgres_hba = f"hba_file={CONF / 'postgres/pg_hba.conf'}"
    # One worker node: mingle and gossip only talk to other nodes, and cost seconds at start.
    celery_argv = [str(VENV_BIN / "celery"), "-A", "project", "worker", "--loglevel=INFO", "--concurrency=2"]
    celery_argv += ["--without-mingle", "--without-gossip"]
    nginx_conf, nginx_globals = str(CONF / "nginx/nginx.conf"), f"daemon off; pid {DATA / 'nginx/nginx.pid'};"
    return [
        Component(
            name="postgres",
            argv=[BINARIES["postgres"], "-D", str(DATA / "postgres"), "-c", postgres_conf, "-c", postgres_hba],
            healthy=lambda: pg_ready(pg),
            address=f"127.0.0.1:{pg} (direct: migrations and psql only)",
            cwd=DATA / "postgres",
            as_service_user=True,
            stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM ("smart") waits for PgBouncer's idle connections
        ),
        Component(
            name="pgbouncer",
            argv=[BINARIES["pgbouncer"], str(CONF / "pgbouncer/pgbouncer.ini")],
            healthy=lambda: pg_ready(bouncer),
            address=f"127.0.0.1:{bouncer} (DATABASE_URL)",
            cwd=DATA / "postgres",
            as_service_user=True,
        ),
        Component(
            name="redis",
            argv=[BINARIES["redis-server"], str(CONF / "redis/redis.conf")],
            healthy=lambda: tcp_exchange(redis, b"PING\r\n", b"+PONG"),
            address=f"127.0.0.1:{redis}",
        ),
        Component(
            name="epmd",
            argv=[BINARIES["epmd"], "-port", str(epmd), "-address", "127.0.0.1"],
            healthy=lambda: tcp_exchange(epmd, b"", b""),
            address=f"127.0.0.1:{epmd} (Erlang port mapper for RabbitMQ)",
            env=erlang_env,
        ),
        Component(
            name="rabbitmq",
            argv=[BINARIES["rabbitmq-server"]],
            # The broker opens its AMQP listener last in its boot, so a protocol greeting means ready.
            healthy=lambda: tcp_exchange(amqp, b"AMQP\x00\x00\x09\x01", b"\x01"),
            address=f"127.0.0.1:{amqp} (node {MQ_NODE})",
            env={
                **erlang_env,
                "RABBITMQ_NODENAME": MQ_NODE,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(amqp),
                "RABBITMQ_DIST_PORT": str(port("STACK_AMQP_DIST_PORT")),
                "RABBITMQ_CONFIG_FILE": str(CONF / "rabbitmq/rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(CONF / "rabbitmq/advanced.config"),  # absent: none
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(CONF / "rabbitmq/enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not the system-wide rabbitmq-env.conf and its NODENAME
                "RABBITMQ_MNESIA_BASE": str(DATA / "rabbitmq/mnesia"),
                "RABBITMQ_LOG_BASE": str(LOG / "rabbitmq"),
                "RABBITMQ_PID_FILE": str(DATA / "rabbitmq/beam.pid"),
                # Our epmd is supervised above; the node must not spawn a daemon epmd that `down` didn't start.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
                "HOME": str(DATA / "rabbitmq"),  # the Erlang cookie lives here, not in root's home
            },
            start_timeout_s=90,
            stop_timeout_s=30,
        ),
        Component(
            name="migrate",
            argv=[str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput"],
            healthy=lambda: True,
            # Once, against PostgreSQL itself: DDL and advisory locks do not belong on a transaction pool.
            env={"DATABASE_URL": database_url(pg)},
            start_timeout_s=180,
            oneshot=True,
        ),
        Component(
            name="gunicorn",
            argv=[str(VENV_BIN / "gunicorn"), "-c", str(DEPLOY / "gunicorn.conf.py"), "project.asgi:application"],
            healthy=lambda: http_status(web, "/healthz") == 200,
            address=f"127.0.0.1:{web} (gunicorn, uvicorn workers)",
            env={
                "GUNICORN_BIND": f"127.0.0.1:{web}",
                # Only gunicorn's workers share this dir (wiped at its start); the Celery worker serves its
                # own metrics, so its counters are neither summed in here nor wiped by a gunicorn restart.
                "PROMETHEUS_MULTIPROC_DIR": str(RUN / "prometheus"),
            },
            start_timeout_s=60,
            stop_timeout_s=30,  # > graceful_timeout in gunicorn.conf.py
        ),
        Component(
            name="celery",
            argv=celery_argv,
            healthy=lambda: logged_since_start("celery", b" ready."),
            address=f"metrics on http://127.0.0.1:{worker_metrics}/metrics",
            env={"WORKER_METRICS_PORT": str(worker_metrics), "WORKER_METRICS_ADDR": "127.0.0.1"},
            start_timeout_s=60,
            stop_timeout_s=30,
        ),
        Component(
            name="nginx",
            argv=[BINARIES["nginx"], "-p", f"{DATA / 'nginx'}/", "-c", nginx_conf, "-e", "stderr", "-g", nginx_globals],
            healthy=lambda: http_status(http_, "/healthz") is not None,
            address=f"http://127.0.0.1:{http_}/ (public)",
            stop_signal=signal.SIGQUIT,  # graceful: finish in-flight requests
        ),
    ]


COMPONENTS = {c.name: c for c in components()}
SUPERVISED = [c for c in COMPONENTS.values() if not c.oneshot]


# --- Processes -----------------------------------------------------------------------------------------------


def service_user_kwargs() -> dict:
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(SERVICE_USER)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def chown_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVICE_USER)
        os.chown(path, account.pw_uid, account.pw_gid)


def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def read_pid(name: str) -> int | None:
    try:
        pid = int(pid_file(name).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def supervisor_pid() -> int | None:
    pid = read_pid("supervisor")
    try:  # a recycled pid is not our supervisor
        return pid if pid and b"_supervise" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except OSError:
        return None


def session_of(pid: int) -> int | None:
    try:  # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def stack_processes() -> set[int]:
    """Every live process of this stack. Each carries CHILD_MARK in its environment, except where a server
    overwrites its environment with its process title (Nginx, Redis): those are found by session instead, as
    each component runs in its own session whose id is the pid in run/NAME.pid, checked against the binary
    so that a recycled pid is never taken for ours."""
    binary_of_session = {}
    for comp in SUPERVISED:
        with contextlib.suppress(OSError, ValueError):
            binary_of_session[int(pid_file(comp.name).read_text())] = os.path.realpath(comp.argv[0])
    mark, found = f"{CHILD_MARK}={STACK_DIR}".encode(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            ours_by_session = os.readlink(entry / "exe") == binary_of_session.get(session_of(pid))
            if ours_by_session or mark in (entry / "environ").read_bytes().split(b"\0"):
                found.add(pid)
    return found


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def log_tail(name: str, lines: int = 15) -> str:
    try:
        text = (LOG / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    """Starts the components in order, then restarts any that dies (like systemd's Restart=always), except
    those held down by a run/NAME.down marker. SIGTERM stops everything in reverse order."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.next_start: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.stopping = False

    def spawn(self, comp: Component) -> subprocess.Popen:
        with open(LOG / f"{comp.name}.log", "ab", buffering=0) as log:
            log.write(b"\n" + START_MARKER % comp.name.encode() + f" at {time.ctime()} ===\n".encode())
            env = {**os.environ, **app_env(), **comp.env, CHILD_MARK: str(STACK_DIR)}
            if comp.as_service_user:
                env["HOME"] = str(comp.cwd)
            proc = subprocess.Popen(
                comp.argv,
                cwd=comp.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopping it reaches every child it forked
                **(service_user_kwargs() if comp.as_service_user else {}),
            )
        self.procs[comp.name], self.started_at[comp.name] = proc, time.monotonic()
        if not comp.oneshot:
            pid_file(comp.name).write_text(f"{proc.pid}\n")
        say(f"started {comp.name} (pid {proc.pid})")
        return proc

    def terminate(self, name: str) -> None:
        """Graceful stop signal, then SIGKILL after the component's timeout; stragglers in its group go too."""
        proc, comp = self.procs.pop(name, None), COMPONENTS[name]
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(comp.stop_signal)
            try:
                proc.wait(comp.stop_timeout_s)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within {comp.stop_timeout_s:g} s; killing it")
        kill_group(proc.pid)
        proc.wait()
        pid_file(name).unlink(missing_ok=True)
        say(f"stopped {name}")

    def wait_healthy(self, comp: Component, proc: subprocess.Popen) -> str | None:
        deadline = time.monotonic() + comp.start_timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if proc.poll() is not None:
                return None if comp.oneshot and proc.returncode == 0 else f"exited with code {proc.returncode}"
            if not comp.oneshot and comp.healthy():
                return None
            time.sleep(0.25)
        return "stack is stopping" if self.stopping else f"not healthy within {comp.start_timeout_s:g} s"

    def boot(self) -> bool:
        for comp in COMPONENTS.values():
            write_state(f"starting {comp.name}")
            error = self.wait_healthy(comp, self.spawn(comp))
            if error is None and comp.name == "postgres":
                error = create_database()
            if error:
                write_state(f"failed {comp.name}: {error}; see {LOG / comp.name}.log")
                return False
            if comp.oneshot:
                del self.procs[comp.name]  # it exited 0; nothing to supervise
            say(f"{comp.name} {'finished' if comp.oneshot else 'is healthy'}")
        write_state("up")
        return True

    def supervise(self) -> None:
        while not self.stopping:
            for comp in SUPERVISED:
                proc, held = self.procs.get(comp.name), (RUN / f"{comp.name}.down").exists()
                if proc and held:
                    self.terminate(comp.name)
                    say(f"{comp.name} is held down (stack.py start {comp.name} releases it)")
                elif proc and proc.poll() is not None:
                    self.restart_later(comp, proc)
                elif not proc and not held and time.monotonic() >= self.next_start.get(comp.name, 0):
                    self.spawn(comp)
            time.sleep(0.2)

    def restart_later(self, comp: Component, proc: subprocess.Popen) -> None:
        kill_group(proc.pid)  # like systemd's KillMode=control-group: orphaned workers would hold the port
        del self.procs[comp.name]
        pid_file(comp.name).unlink(missing_ok=True)
        uptime_s = time.monotonic() - self.started_at[comp.name]
        # Back off 0.5 s, 1 s, 2 s ... 10 s while it keeps dying young; a run of 30 s resets the count.
        failures = 0 if uptime_s > 30 else self.failures.get(comp.name, 0) + 1
        self.failures[comp.name] = failures
        delay_s = min(0.5 * 2**failures, 10)
        self.next_start[comp.name] = time.monotonic() + delay_s
        say(f"{comp.name} exited with code {proc.returncode} after {uptime_s:.1f} s; restarting in {delay_s:g} s")

    def run(self) -> int:
        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        pid_file("supervisor").write_text(f"{os.getpid()}\n")
        ok = self.boot()
        if ok:
            self.supervise()
        for comp in reversed(COMPONENTS.values()):  # a hung migration too, when the boot failed on it
            self.terminate(comp.name)
        pid_file("supervisor").unlink(missing_ok=True)
        say("supervisor exits")
        return 0 if ok else 1


def write_state(state: str) -> None:
    say(state)
    tmp = RUN / "supervisor.state.tmp"
    tmp.write_text(state + "\n")
    tmp.replace(RUN / "supervisor.state")  # atomic: `up` never reads half a line


def create_database() -> str | None:
    if PG_DB == "postgres":
        return None
    command = [BINARIES["createdb"], "-h", "127.0.0.1", "-p", str(port("STACK_PG_PORT")), "-U", PG_USER, PG_DB]
    result = subprocess.run(
        command, env={**os.environ, "PGPASSWORD": PG_PASSWORD}, capture_output=True, text=True, check=False
    )
    if result.returncode and "already exists" not in result.stderr:
        return f"createdb {PG_DB} failed: {result.stderr.strip()}"
    return None


# --- Preparation: config, secrets, data dirs (run by `up`, before the supervisor) ----------------------------


class ConfTemplate(string.Template):
    """Only ${UPPER_CASE} is ours; Nginx's $lowercase and ${lowercase} variables pass through untouched."""

    flags = 0  # case-sensitive
    pattern = r"\$(?:(?P<escaped>(?!))|\{(?P<braced>[A-Z][A-Z0-9_]*)\}|(?P<named>(?!))|(?P<invalid>(?!)))"


TEMPLATES = [  # deploy/ file -> conf/ file
    ("postgres/postgresql.conf", "postgres/postgresql.conf"),
    ("postgres/pg_hba.conf", "postgres/pg_hba.conf"),
    ("pgbouncer/pgbouncer.ini", "pgbouncer/pgbouncer.ini"),
    ("redis/redis.conf", "redis/redis.conf"),
    ("rabbitmq/rabbitmq.conf", "rabbitmq/rabbitmq.conf"),
    ("rabbitmq/enabled_plugins", "rabbitmq/enabled_plugins"),
    ("nginx/nginx.conf", "nginx/nginx.conf"),
    ("nginx/conf.d/items.conf.template", "nginx/conf.d/items.conf"),
]


def template_values() -> dict[str, str]:
    return {
        "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
        "POSTGRES_PORT": str(port("STACK_PG_PORT")),
        "POSTGRES_SOCKET_DIR": "",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_USER": PG_USER,
        "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
        "PGBOUNCER_PORT": str(port("STACK_PGBOUNCER_PORT")),
        "PGBOUNCER_AUTH_FILE": str(CONF / "pgbouncer/userlist.txt"),
        "REDIS_BIND": "127.0.0.1",
        "REDIS_PORT": str(port("STACK_REDIS_PORT")),
        "REDIS_DATA_DIR": str(DATA / "redis"),
        "RABBITMQ_LISTENER": f"127.0.0.1:{port('STACK_AMQP_PORT')}",
        "RABBITMQ_USER": MQ_USER,
        "RABBITMQ_PASSWORD": MQ_PASSWORD,
        "NGINX_LISTEN": f"127.0.0.1:{port('STACK_HTTP_PORT')}",
        "NGINX_UPSTREAM": f"127.0.0.1:{port('STACK_WEB_PORT')}",
        "NGINX_RESOLVER": "127.0.0.1",  # required syntax only: the upstream is an IP literal, never resolved
        "NGINX_CACHE_DIR": str(DATA / "nginx"),
        # The micro-cache TTL bounds how stale a reader can be (DESIGN.md §4); Nginx time syntax (1s, 500ms).
        "NGINX_MICROCACHE_TTL": os.environ.get("NGINX_MICROCACHE_TTL", "1s"),
    }


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def render_config() -> None:
    values = template_values()
    for source, target in TEMPLATES:
        try:
            text = ConfTemplate((DEPLOY / source).read_text()).substitute(values)
        except KeyError as missing:
            sys.exit(f"stack: deploy/{source} uses ${{{missing.args[0]}}}, which stack.py does not define")
        secret = target == "rabbitmq/rabbitmq.conf"  # holds the broker password
        write_file(CONF / target, text, 0o600 if secret else 0o644)
    # Secrets and lists that come from the environment, generated here and never committed.
    write_file(CONF / "pgbouncer/userlist.txt", f'"{PG_USER}" "{PG_PASSWORD}"\n', 0o600)
    chown_to_service_user(CONF / "pgbouncer/userlist.txt")
    lines = ["# Generated by stack.py from RATELIMIT_ALLOWLIST: these clients bypass Nginx's rate limits."]
    for cidr in filter(None, (c.strip() for c in os.environ.get("RATELIMIT_ALLOWLIST", "").split(","))):
        try:
            lines.append(f"{ipaddress.ip_network(cidr, strict=False)} 1;")
        except ValueError:
            sys.exit(f"stack: RATELIMIT_ALLOWLIST entry {cidr!r} is not an IP address or CIDR")
    write_file(CONF / "nginx/ratelimit-allowlist.geo", "\n".join(lines) + "\n")
    if not (CONF / "secret_key").exists():
        write_file(CONF / "secret_key", secrets.token_urlsafe(50) + "\n", 0o600)


def check_service_user_can_reach(path: Path) -> None:
    if os.geteuid() != 0:
        return
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            sys.exit(
                f"stack: PostgreSQL runs as {SERVICE_USER!r}, which cannot enter {parent} (mode "
                f"{oct(parent.stat().st_mode & 0o777)}). Run `chmod o+x {parent}` or set STACK_DIR elsewhere."
            )


INITDB_OPTIONS = ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]


def init_postgres() -> None:
    pgdata = DATA / "postgres"
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    chown_to_service_user(pgdata)
    if (pgdata / "PG_VERSION").exists():
        return
    say("initdb: creating the PostgreSQL cluster (first start)")
    pwfile = CONF / "postgres/initdb.pw"
    write_file(pwfile, PG_PASSWORD + "\n", 0o600)
    chown_to_service_user(pwfile)
    try:
        with open(LOG / "postgres.log", "ab") as log:
            subprocess.run(
                [BINARIES["initdb"], "-D", str(pgdata), "-U", PG_USER, f"--pwfile={pwfile}", *INITDB_OPTIONS],
                cwd=pgdata,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                **service_user_kwargs(),
            )
    except subprocess.CalledProcessError:
        sys.exit(f"stack: initdb failed; see {LOG / 'postgres.log'}\n{log_tail('postgres')}")
    finally:
        pwfile.unlink(missing_ok=True)


def write_env_file() -> None:
    """How other tools (tests, load tests, an operator's manage.py) reach this stack: `set -a; . .stack/env`."""
    extra = {
        "STACK_DIR": str(STACK_DIR),
        "STACK_HTTP_URL": f"http://127.0.0.1:{port('STACK_HTTP_PORT')}",
        "STACK_WEB_URL": f"http://127.0.0.1:{port('STACK_WEB_PORT')}",
        "DATABASE_DIRECT_URL": database_url(port("STACK_PG_PORT")),
        "STACK_PG_BIN": str(Path(BINARIES["psql"] or "psql").parent),
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": PG_PASSWORD,
        "POSTGRES_DB": PG_DB,
        "WORKER_METRICS_PORT": str(port("STACK_WORKER_METRICS_PORT")),
        "RABBITMQ_NODENAME": MQ_NODE,
        "ERL_EPMD_PORT": str(port("STACK_EPMD_PORT")),
    }
    lines = [f"{key}={value}" for key, value in {**app_env(), **extra}.items()]
    write_file(STACK_DIR / "env", "# Written by deploy/stack/stack.py up.\n" + "\n".join(lines) + "\n", 0o600)


def missing_binaries() -> list[str]:
    return [name for name, path in BINARIES.items() if not path]


def ports_in_use() -> list[str]:
    busy = []
    for name in PORT_DEFAULTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port(name)))
            except OSError:
                busy.append(f"{name}={port(name)}")
    return busy


def stop_strays(grace_s: float = 10) -> None:
    """Processes of this stack that no supervisor owns (it was killed): TERM to each session leader (the
    component's main process), then KILL whatever is left after grace_s."""
    pids = stack_processes()
    if not pids:
        return
    say(f"stopping {len(pids)} stray process(es) of a previous run: {sorted(pids)}")
    for pid in pids:
        if session_of(pid) == pid:
            kill_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while stack_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in stack_processes():
        kill_pid(pid, signal.SIGKILL)


# --- Commands ------------------------------------------------------------------------------------------------


def cmd_check() -> int:
    missing = missing_binaries()
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install {APT_PACKAGES} (or: make system-deps)")
        return 1
    return 0


def cmd_up() -> int:
    if supervisor_pid():
        print(f"stack is already up (supervisor pid {supervisor_pid()})")
        cmd_status()
        return 0
    if cmd_check():
        return 1
    if not all(os.access(VENV_BIN / name, os.X_OK) for name in ("python", "gunicorn", "celery")):
        sys.exit(f"stack: {VENV_BIN} lacks python, gunicorn or celery; run `make install` first")
    for directory in (RUN, LOG, DATA / "redis", DATA / "rabbitmq", DATA / "nginx", RUN / "prometheus"):
        directory.mkdir(parents=True, exist_ok=True)
    STACK_DIR.chmod(0o755)
    check_service_user_can_reach(DATA / "postgres")
    stop_strays()
    busy = ports_in_use()
    if busy:
        sys.exit(f"stack: port(s) already in use by another process: {', '.join(busy)}; choose free ones")
    for marker in RUN.glob("*.down"):  # `up` means everything up
        marker.unlink()
    (RUN / "supervisor.state").unlink(missing_ok=True)
    render_config()
    init_postgres()
    write_env_file()

    with open(LOG / "supervisor.log", "ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_supervise"],
            cwd=REPO,
            env={**os.environ, "STACK_DIR": str(STACK_DIR)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: outlives this command and its terminal
        )
    shown = ""
    while True:
        try:
            state = (RUN / "supervisor.state").read_text().strip()
        except OSError:
            state = ""
        if state != shown:
            say(state)
            shown = state
        if state == "up":
            break
        if state.startswith("failed") or supervisor.poll() is not None:
            name = state.split()[1].rstrip(":") if state.startswith("failed") else "supervisor"
            print(f"stack: {state or 'the supervisor died'}\n--- last lines of {LOG / name}.log:\n{log_tail(name)}")
            supervisor.wait(300)  # it stops what it started before exiting
            return 1
        time.sleep(0.2)
    http_ = port("STACK_HTTP_PORT")
    if http_status(http_, "/healthz") != 200:
        print(f"stack: warning: GET /healthz through Nginx did not answer 200; see {LOG}/nginx.log")
    print("\nThe stack is up:")
    for comp in SUPERVISED:
        print(f"  {comp.name:<10} pid {read_pid(comp.name) or '-':<8} {comp.address}")
    print(f"\nPublic URL: http://127.0.0.1:{http_}/  (try: curl -i http://127.0.0.1:{http_}/items)")
    print(f"Logs: {LOG}/   Environment for tools: {STACK_DIR / 'env'}   Stop: stack.py down")
    return 0


def cmd_down() -> int:
    pid = supervisor_pid()
    if pid:
        say(f"stopping the supervisor (pid {pid}); it stops the components in reverse order")
        os.kill(pid, signal.SIGTERM)
        budget_s = sum(c.stop_timeout_s for c in SUPERVISED) + 10
        deadline = time.monotonic() + budget_s
        while supervisor_pid() and time.monotonic() < deadline:
            time.sleep(0.2)
        if supervisor_pid():
            say(f"supervisor did not exit within {budget_s:g} s; killing it")
            os.kill(pid, signal.SIGKILL)
    stop_strays()
    for comp in SUPERVISED:
        pid_file(comp.name).unlink(missing_ok=True)
    pid_file("supervisor").unlink(missing_ok=True)
    left = stack_processes()
    if left:
        print(f"stack: processes still running: {sorted(left)}")
        return 1
    say("stack is down; no process of it is left")
    return 0


def cmd_status() -> int:
    sup = supervisor_pid()
    print(f"supervisor  {'pid ' + str(sup) if sup else 'not running'}  ({STACK_DIR})")
    all_up = bool(sup)
    for comp in SUPERVISED:
        pid, held = read_pid(comp.name), (RUN / f"{comp.name}.down").exists()
        state = "up" if pid else ("held down" if held else "down")
        all_up = all_up and bool(pid)
        print(f"  {comp.name:<10} {state:<10} pid {pid or '-':<8} {comp.address}")
    return 0 if all_up else 3


def cmd_stop(name: str) -> int:
    comp = supervised_component(name)
    (RUN / f"{name}.down").touch()
    deadline = time.monotonic() + comp.stop_timeout_s + 10
    while read_pid(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if read_pid(name):
        print(f"stack: {name} is still running after {comp.stop_timeout_s + 10:g} s")
        return 1
    say(f"{name} is stopped and held down")
    return 0


def cmd_start(name: str) -> int:
    comp = supervised_component(name)
    (RUN / f"{name}.down").unlink(missing_ok=True)
    deadline = time.monotonic() + comp.start_timeout_s + 10
    while time.monotonic() < deadline:
        if read_pid(name) and comp.healthy():
            say(f"{name} is up (pid {read_pid(name)})")
            return 0
        time.sleep(0.2)
    print(f"stack: {name} is not healthy after {comp.start_timeout_s + 10:g} s; see {LOG / name}.log")
    return 1


def supervised_component(name: str) -> Component:
    if name not in {c.name for c in SUPERVISED}:
        sys.exit(f"stack: unknown component {name!r}; one of: {', '.join(c.name for c in SUPERVISED)}")
    if not supervisor_pid():
        sys.exit("stack: the stack is not up (stack.py up)")
    return COMPONENTS[name]


def main(argv: list[str]) -> int:
    commands: dict[str, Callable[..., int]] = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "check": cmd_check,
        "stop": cmd_stop,
        "start": cmd_start,
        "_supervise": lambda: Supervisor().run(),
    }
    takes_name = argv[1:2] in (["stop"], ["start"])
    if len(argv) != (3 if takes_name else 2) or argv[1] not in commands:
        print(USAGE, file=sys.stderr)
        return 2
    return commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
