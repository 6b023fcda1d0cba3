"""The helper servers' environment, configuration and CPU reading."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from loadtest.servers import PROXY_LOG_FORMAT, Server, gunicorn_env, render_proxy_conf


def test_extra_gunicorns_get_their_own_port_and_metrics_dir_and_are_not_stack_children(tmp_path):
    stack_gunicorn = {
        "WEB_CONCURRENCY": "2",
        "GUNICORN_BIND": "127.0.0.1:58000",
        "PROMETHEUS_MULTIPROC_DIR": "/stack/run/prometheus",
        "ITEMS_STACK_CHILD": "/stack",
    }

    env = gunicorn_env(stack_gunicorn, port=41000, metrics_dir=tmp_path, extra={"RESPONSE_CACHE_ENABLED": "0"})

    assert env == {
        "WEB_CONCURRENCY": "2",
        "GUNICORN_BIND": "127.0.0.1:41000",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "RESPONSE_CACHE_ENABLED": "0",
    }


@pytest.mark.parametrize("limit_conn", [0, 200])
def test_the_front_config_logs_what_the_parser_reads_and_sheds_at_nginx_only_when_asked(tmp_path, limit_conn):
    conf = render_proxy_conf(tmp_path, port=18080, upstream_port=18000, limit_conn=limit_conn)

    assert f"log_format loadtest '{PROXY_LOG_FORMAT}'" in conf
    assert 'proxy_set_header X-Request-Start "t=${msec}"' in conf  # the shedder's queue-time budget applies
    assert "proxy_cache" not in conf and "limit_req" not in conf  # every GET reaches the app
    assert ("limit_conn inflight 200;" in conf) is bool(limit_conn)
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin")
    if nginx:  # the rendered file is one Nginx accepts (the tool would fail at start otherwise)
        (tmp_path / "tmp").mkdir()
        (tmp_path / "nginx.conf").write_text(conf)
        checked = subprocess.run(
            [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "e.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr


def test_workers_cpu_is_what_the_masters_children_used(tmp_path):
    # A "master" whose one child spins: the CPU counted is the child's, which the master itself never uses.
    spin = "import time\nend = time.monotonic() + 0.6\nwhile time.monotonic() < end: pass\ntime.sleep(30)"
    master = "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', sys.argv[1]])\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", master, spin], start_new_session=True)
    server = Server("spinner", proc, 0, [], tmp_path / "log")
    try:
        time.sleep(1.2)
        assert 0.4 <= server.workers_cpu_s() <= 1.2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
