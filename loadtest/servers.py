"""Servers the load tool starts for itself on free loopback ports: the static-file Nginx and the bare-ASGI
gunicorn baselines, and a second app gunicorn with the response cache off. Each is stopped by its own pid."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.stack import CHILD_MARK
from loadtest.stack_env import REPO

GUNICORN_CONF = REPO / "deploy" / "web" / "gunicorn.conf.py"
WEB_START = REPO / "deploy" / "web" / "start"  # the web tier's one command line, as the stack and images run it
VENV_BIN = REPO / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_workers(master: int) -> list[str] | None:
    """The pids of a gunicorn master's children, its workers (None: no such process)."""
    try:
        return Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return None


def http_get(url_host: str, port: int, path: str, timeout_s: float = 5) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    argv: list[str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_gunicorn(self) -> bool:
        """Started by start_gunicorn (its log counts max_requests recycles)."""
        return str(WEB_START) in self.argv

    def wait_ready(self, path: str, timeout_s: float = 60) -> None:
        """Until `path` answers 200; raises RuntimeError with the log's tail if the process dies or is slow."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get("127.0.0.1", self.port, path, timeout_s=2)[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer 200 on {path} within {timeout_s:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def workers_cpu_s(self) -> float:
        """CPU seconds (user + system) its gunicorn workers have used so far: the children of the master, which
        start/exec makes our own process. On a shared machine the cost per request moves far less with the
        neighbours than requests per second do."""
        ticks = 0
        for pid in gunicorn_workers(self.proc.pid) or []:
            with contextlib.suppress(OSError):
                # After the ")" ending the command name: state is field 3, utime and stime fields 14 and 15.
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout_s: float = 25) -> None:
        """SIGTERM (gunicorn: graceful; Nginx: fast) to our own process group, SIGKILL after timeout_s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


RECYCLE_LINE = b"Maximum request limit"  # gunicorn's log line when max_requests recycles a worker


def count_recycles(log: Path) -> int:
    """Workers recycled by max_requests so far, per gunicorn's log: each one drops its open connections."""
    try:
        return log.read_bytes().count(RECYCLE_LINE)
    except OSError:
        return 0


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it reaches every worker it forked
        )


NGINX_CONF = """\
# Baseline: Nginx serving the captured bytes of GET /items as a static file. Rendered by loadtest; the same
# worker, event and keepalive settings as deploy/nginx, and a buffered access log as the stack keeps one.
daemon off;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    access_log {dir}/access.log combined buffer=32k flush=1s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type "application/json; charset=utf-8";
            root {dir};
            try_files /items.json =404;
        }}
    }}
}}
"""


def start_static_nginx(work_dir: Path, body: bytes) -> Server:
    """A separate tiny Nginx on a free port serving `body`; its config is written to work_dir/nginx.conf."""
    nginx = _nginx_binary()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "tmp").mkdir(exist_ok=True)
    (work_dir / "items.json").write_bytes(body)
    port = free_port()
    conf = work_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work_dir, port=port))
    argv = [nginx, "-p", f"{work_dir}/", "-c", str(conf), "-e", str(work_dir / "error.log")]
    log = work_dir / "nginx.out"
    server = Server("baseline nginx", _spawn("nginx", argv, dict(os.environ), log), port, argv, log)
    server.wait_ready("/items", timeout_s=15)
    return server


# The overload scenarios' front: a pass-through Nginx (no cache, no rate limits) in front of one app gunicorn,
# with the stack's proxy settings (keepalive pool, X-Request-Start) and an unbuffered access log of
# status, request time and upstream time per request. Why an access log: wrk keeps one latency histogram for
# every answer (its Lua API sees no timing), so it cannot give the p99 of the 2xx apart from the latency of the
# 503s; a generator of our own in Python would spend more of the 2 shared cores than the server it measures.
# Nginx is what stands in front of gunicorn in production anyway, and its X-Request-Start makes the shedder's
# queue-time budget part of the measurement. Unbuffered: every run's lines are on disk when wrk exits.
PROXY_LOG_FORMAT = "$msec $status $request_time $upstream_response_time $upstream_status $sent_http_retry_after"
PROXY_CONF = """\
# Overload front: Nginx proxying to one app gunicorn, no micro-cache, no rate limits. Rendered by loadtest.
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    log_format loadtest '{log_format}';
    access_log {dir}/access.log loadtest;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_timeout 60s;
        keepalive_requests 10000;
    }}
    {limit_conn_zone}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name front;  # the key of limit_conn below: an empty key would not be counted
        {limit_conn}
        location @overloaded {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 503 '{{"error":"overloaded","detail":"Too many requests in flight; retry later."}}';
        }}
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Request-Start "t=${{msec}}";
            proxy_set_header X-Client-Connection $connection;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            # As the stack's Nginx: one retry on a fresh connection when a kept-alive one fails before an answer,
            # never for a POST (decision 009).
            proxy_next_upstream error;
            proxy_next_upstream_tries 2;
            proxy_pass http://app;
        }}
    }}
}}
"""


def _nginx_binary() -> str:
    nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not nginx:
        raise RuntimeError("nginx not found: apt-get install nginx (or make system-deps)")
    return nginx


# An experiment (--front-limit-conn): Nginx itself answers 503 + Retry-After past N requests in progress, before
# anything reaches Python. A fixed number, unlike the app's adaptive limit.
LIMIT_CONN_ZONE = "limit_conn_zone $server_name zone=inflight:1m;"
LIMIT_CONN = "limit_conn inflight {n}; limit_conn_status 503; limit_conn_log_level info; error_page 503 = @overloaded;"


def render_proxy_conf(work_dir: Path, *, port: int, upstream_port: int, limit_conn: int = 0) -> str:
    """The front's nginx.conf (pure: tests render it without starting anything)."""
    return PROXY_CONF.format(
        dir=work_dir,
        port=port,
        upstream_port=upstream_port,
        log_format=PROXY_LOG_FORMAT,
        limit_conn_zone=LIMIT_CONN_ZONE if limit_conn else "",
        limit_conn=LIMIT_CONN.format(n=limit_conn) if limit_conn else "",
    )


def start_proxy_nginx(name: str, work_dir: Path, upstream_port: int, limit_conn: int = 0) -> Server:
    """A pass-through Nginx on a free port in front of 127.0.0.1:upstream_port; access log: work_dir/access.log.
    limit_conn > 0: Nginx answers 503 overloaded itself past that many requests in progress."""
    nginx = _nginx_binary()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "tmp").mkdir(exist_ok=True)
    port = free_port()
    conf = work_dir / "nginx.conf"
    conf.write_text(render_proxy_conf(work_dir, port=port, upstream_port=upstream_port, limit_conn=limit_conn))
    argv = [nginx, "-p", f"{work_dir}/", "-c", str(conf), "-e", str(work_dir / "error.log")]
    log = work_dir / "nginx.out"
    server = Server(name, _spawn(name, argv, dict(os.environ), log), port, argv, log)
    server.wait_ready("/healthz", timeout_s=15)
    return server


def worker_pids(master_pid: int) -> list[int]:
    """The live children of a gunicorn master (its workers), from /proc."""
    try:
        text = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
        return [int(pid) for pid in text.split()]
    except (OSError, ValueError):
        return []


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def gunicorn_env(base: dict[str, str], *, port: int, metrics_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """`base` (the stack gunicorn's own environment) moved to another port and its own metrics dir.

    The metrics dir must differ: gunicorn.conf.py wipes PROMETHEUS_MULTIPROC_DIR at start, and the stack's
    counters live in its own.
    """
    # CHILD_MARK is how `python -m deploy.stack down` finds its strays; ours are not its children.
    env = {key: value for key, value in base.items() if key != CHILD_MARK}
    env.update(extra)
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


def start_gunicorn(
    name: str,
    app: str,
    *,
    base_env: dict[str, str],
    work_dir: Path,
    extra_env: dict[str, str],
    ready_path: str,
    repo: Path = REPO,
) -> Server:
    """deploy/web/start serving APP on a free port: the stack's command line, worker count and worker class.
    `repo`: another checkout (a git worktree of an earlier commit, for an A/B in one run), with this one's venv."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = gunicorn_env(base_env, port=port, metrics_dir=work_dir / "prometheus", extra=extra_env)
    # The start script runs `gunicorn` from PATH: the virtualenv's first, as the stack runs it.
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH') or os.environ.get('PATH', '')}"
    if not shutil.which("gunicorn", path=env["PATH"]):
        raise RuntimeError("gunicorn not found: make install")
    # No control socket: its default path (~/.gunicorn/gunicorn.ctl) is shared by every gunicorn of this user,
    # and ours must not take it from the stack's. It plays no part in serving requests.
    argv = ["env", f"GUNICORN_APP={app}", str(repo / WEB_START.relative_to(REPO)), "--no-control-socket"]
    log = work_dir / "gunicorn.log"
    server = Server(name, _spawn(name, argv, env, log, cwd=repo), port, argv, log)
    server.wait_ready(ready_path, timeout_s=60)
    return server
