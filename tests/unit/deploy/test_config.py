"""deploy.stack's settings: ports and credentials come from the environment when a command runs, never at import."""

import os
import subprocess
import sys

import pytest

import deploy.stack
from deploy.stack.config import PORT_DEFAULTS, PORT_NAMES, Config, StackError, port
from tests.support import REPO

# Imports every module of deploy.stack (but __main__, which runs the CLI) under an audit hook, and records what
# would be a side effect: a glob, a subprocess, a write, a directory made, or a binary looked up.
IMPORT_PROBE = """
import os, pkgutil, shutil, sys
effects = []
WATCHED = {"glob.glob", "subprocess.Popen", "os.mkdir", "os.chmod", "os.chown", "os.rename", "os.remove",
           "os.system", "shutil.rmtree", "os.symlink"}
def hook(event, args):
    if event in WATCHED:
        effects.append(event)
    elif event == "open" and isinstance(args[1], str) and set(args[1]) & set("wax+"):
        effects.append(f"open {args[0]} {args[1]}")
sys.addaudithook(hook)
shutil.which = lambda *args, **kwargs: effects.append(f"which {args[0]}")
os.access = lambda *args, **kwargs: effects.append(f"access {args[0]}")
import deploy.stack
for module in pkgutil.iter_modules(deploy.stack.__path__):
    if module.name != "__main__":
        __import__(f"deploy.stack.{module.name}")
print("effects:", effects)
"""


def test_importing_any_module_of_the_stack_has_no_side_effects_even_with_a_bad_environment(tmp_path):
    state = tmp_path / "never-created"
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "STACK_DIR": str(state),
        "STACK_HTTP_PORT": "not-a-port",  # `port()` used to exit the importer
        "STACK_BIN_PATH": "/nonexistent",
    }
    probe = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "effects: []"
    assert not state.exists()


def test_a_port_that_is_not_a_number_is_refused_naming_the_variable():
    with pytest.raises(StackError, match=r"STACK_WEB_PORT='80a' is not a TCP port"):
        port("STACK_WEB_PORT", {"STACK_WEB_PORT": "80a"})


@pytest.mark.parametrize("value", ["0", "65536", "-1", " 80"])
def test_a_port_outside_1_to_65535_is_refused(value):
    with pytest.raises(StackError):
        port("STACK_HTTP_PORT", {"STACK_HTTP_PORT": value})


@pytest.mark.parametrize("environ", [{}, {"STACK_REDIS_PORT": ""}])
def test_an_unset_or_empty_port_takes_its_default(environ):
    assert port("STACK_REDIS_PORT", environ) == PORT_DEFAULTS["STACK_REDIS_PORT"]


def test_the_config_reads_ports_and_credentials_from_the_environment_it_is_given(tmp_path):
    cfg = Config.from_environ(
        {"STACK_DIR": str(tmp_path), "STACK_PG_PORT": "40001", "POSTGRES_PASSWORD": "p@ss/word"}, binaries={}
    )
    assert cfg.stack_dir == tmp_path.resolve()
    assert cfg.ports["STACK_PG_PORT"] == 40001
    assert cfg.ports["STACK_HTTP_PORT"] == PORT_DEFAULTS["STACK_HTTP_PORT"]
    assert cfg.database_url("STACK_PG_PORT") == "postgres://items:p%40ss%2Fword@127.0.0.1:40001/items"
    assert cfg.run == tmp_path.resolve() / "run"


def test_other_tools_import_the_port_names_from_the_package():
    assert deploy.stack.PORT_NAMES == PORT_NAMES == tuple(PORT_DEFAULTS)
    assert len(set(PORT_DEFAULTS.values())) == len(PORT_DEFAULTS), "two components would share a port"
