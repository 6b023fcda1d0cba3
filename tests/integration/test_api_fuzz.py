"""schemathesis against the OpenAPI schema the service publishes: no server error, JSON bodies only, every
response as the schema describes it (status, content type, body), on the embedded default and through Nginx on
the native stack. Bounded runs (FUZZ_MAX_TIME_S each)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from schemathesis.core.warnings import SchemathesisWarning

from tests.support import REPO, free_ports, wait_until

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,content_type_conformance,response_schema_conformance,status_code_conformance"
# Every warning but two, which judge the generator's data rather than the answers (every check above still runs
# on every request): `validation_mismatch` counts each 4xx but 401, 403, 404, 409 and 429 as "the schema allowed
# what the API refused", and a reused Idempotency-Key with another body is answered 422 (as the IETF draft says),
# which the generator, trying the same few keys again and again, reaches in whole phases; `low_valid_rate` fires
# when most of an operation's generated requests are refused, as GET /items's can be: its cursor is a signed token
# (app/cursor.py) that no generator can forge, and the coverage phase tries limit on both sides of its bounds
# (seen in a full run: 6 of 7 coverage cases refused, all 6,223 requests answered as the schema says).
IGNORED_WARNINGS = {SchemathesisWarning.VALIDATION_MISMATCH, SchemathesisWarning.LOW_VALID_RATE}
WARNINGS = ",".join(w.value for w in SchemathesisWarning if w not in IGNORED_WARNINGS)
MAX_TIME_S = os.environ.get("FUZZ_MAX_TIME_S", "60")


def schemathesis(base_url: str) -> subprocess.CompletedProcess:
    st = Path(sys.executable).with_name("st")
    # A generous timeout per request: this suite shares two cores with the stack, and a slow answer is not wrong.
    budget = ["--max-examples", "30", "--max-time", MAX_TIME_S, "--workers", "2", "--request-timeout", "30"]
    return subprocess.run(
        [
            *(str(st), "run", f"{base_url}/schema", "--url", base_url),
            *("--checks", CHECKS, "--warnings", WARNINGS, *budget, "--no-color"),
        ],
        capture_output=True,
        text=True,
        timeout=int(MAX_TIME_S) * 3 + 120,
        check=False,
    )


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def assert_clean(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout, run.stdout[-3000:]


def test_the_embedded_default_answers_every_generated_request_as_its_schema_says():
    (port,) = free_ports(1)
    database = Path(tempfile.mkdtemp(prefix="items-fuzz-")) / "db.sqlite3"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "STATE_REDIS_", "BROKER_", "APP_ENV", "STACK_"))
    }
    env["SQLITE_PATH"] = str(database)
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    log_path = database.with_name("server.log")
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            python,
            "-m",
            "uvicorn",
            "project.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--http",
            "project.asgi_stack.server_errors:EnvelopeHttpToolsProtocol",  # as `make run`
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe: nobody reads a pipe until the end, and a full one (64 KiB of log lines) would block
        # the server on its next write, which is how a run once "timed out".
        stderr=log,
        text=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: subprocess.run(["curl", "-sf", f"{base_url}/healthz"], capture_output=True).returncode == 0, 30
        )
        assert_clean(schemathesis(base_url))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    errors = log_path.read_text(errors="replace")
    assert "Traceback" not in errors, errors[-3000:]


def test_through_nginx_on_the_native_stack_every_generated_request_is_answered_as_the_schema_says(stack):
    assert_clean(schemathesis(stack.base_url))
