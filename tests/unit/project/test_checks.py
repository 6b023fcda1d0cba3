"""Production mode refuses unsafe settings, and `check --deploy` is clean when they are right."""

import os
import re
import subprocess
import sys

import pytest
from django.core.management.base import SystemCheckError

from tests.support import REPO

GOOD = {
    "APP_ENV": "production",
    "SECRET_KEY": "prod-Secret-Value-used-only-by-these-tests-0123456789-abcdefXYZ",
    "ALLOWED_HOSTS": "api.example.com",
    # Two Redis servers: the evicting response cache and the state store (nothing connects to them here).
    "REDIS_URL": "redis://cache.example:6379/0",
    "STATE_REDIS_URL": "redis://state.example:6379/0",
}


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    ours = {"APP_ENV", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "REDIS_URL", "STATE_REDIS_URL", "WEB_CONCURRENCY"}
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_is_clean_in_production_mode_with_real_settings():
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **GOOD)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("override", "check_id"),
    [
        ({"SECRET_KEY": ""}, "items.E001"),
        ({"SECRET_KEY": "short"}, "items.E001"),
        ({"SECRET_KEY": "a" * 60}, "items.E001"),
        ({"DEBUG": "1"}, "items.E002"),
        ({"ALLOWED_HOSTS": ""}, "items.E003"),
        ({"ALLOWED_HOSTS": "*"}, "items.E003"),
        ({"REDIS_URL": "", "STATE_REDIS_URL": "", "WEB_CONCURRENCY": "2"}, "items.E006"),
    ],
)
def test_check_deploy_fails_naming_the_unsafe_setting(override, check_id):
    result = _run("manage.py", "check", "--deploy", **{**GOOD, **override})
    assert result.returncode != 0
    assert check_id in result.stderr
    assert "HINT" in result.stderr


@pytest.mark.parametrize("entry_point", ["project.asgi", "project.wsgi"])
def test_the_server_entry_points_refuse_to_start_with_the_development_key(entry_point):
    result = _run("-c", f"import {entry_point}", APP_ENV="production", ALLOWED_HOSTS="x")
    assert result.returncode != 0
    assert "Refusing to start in production mode" in result.stderr
    assert "items.E001" in result.stderr


def test_the_server_entry_point_starts_with_good_production_settings():
    result = _run("-c", "import project.asgi", **GOOD)
    assert result.returncode == 0, result.stderr


def test_a_malformed_variable_is_named_in_the_error():
    result = _run("manage.py", "check", RATELIMIT_ENABLED="maybe")
    assert result.returncode != 0
    assert "RATELIMIT_ENABLED='maybe' is not a boolean" in result.stderr


def test_a_bad_database_url_is_named_in_the_error():
    result = _run("manage.py", "check", DATABASE_URL="mysql://x")
    assert result.returncode != 0
    assert "DATABASE_URL='mysql://x' is not a PostgreSQL URL" in result.stderr


def test_security_headers_are_on_every_response(client):
    response = client.get("/healthz")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in response  # no TLS in front by default


def test_behind_tls_production_adds_hsts():
    probe = (
        "from django.test import Client; import django; django.setup();"
        "r = Client().get('/healthz', headers={'X-Forwarded-Proto': 'https'});"
        "print(r.status_code, r.get('Strict-Transport-Security'))"
    )
    result = _run("-c", probe, DJANGO_SETTINGS_MODULE="project.settings", BEHIND_TLS="1", **GOOD)
    assert result.returncode == 0, result.stderr
    assert "200 max-age=31536000; includeSubDomains; preload" in result.stdout
    check = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", BEHIND_TLS="1", **GOOD)
    assert check.returncode == 0, check.stderr


def _ids(messages) -> set[str]:
    return {message.id for message in messages}


def test_contradicting_shedding_limits_are_refused_at_start_in_any_mode(settings):
    from project.checks import consistent_settings
    from project.startup import refuse_misconfiguration

    settings.SHED_LIMIT_MIN, settings.SHED_LIMIT_INITIAL, settings.SHED_LIMIT_MAX = 8, 4, 64
    assert _ids(consistent_settings()) == {"items.E004"}
    with pytest.raises(SystemCheckError, match=re.escape("items.E004: SHED_LIMIT_MIN (8) <= SHED_LIMIT_INITIAL (4)")):
        refuse_misconfiguration()


def test_backpressure_watermarks_in_the_wrong_order_are_refused(settings):
    from project.checks import consistent_settings

    settings.BACKPRESSURE_LOW, settings.BACKPRESSURE_HIGH = 500, 500
    assert _ids(consistent_settings()) == {"items.E005"}


def test_the_security_headers_middleware_left_out_is_a_warning(settings):
    from project.checks import security_headers_middleware

    assert security_headers_middleware() == []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith(".SecurityMiddleware")]
    assert _ids(security_headers_middleware()) == {"items.W001"}


def test_one_web_process_may_keep_its_state_in_memory():
    result = _run(
        "manage.py", "check", "--deploy", **{**GOOD, "REDIS_URL": "", "STATE_REDIS_URL": "", "WEB_CONCURRENCY": "1"}
    )
    assert result.returncode == 0, result.stderr


def test_state_sharing_the_evicting_cache_is_a_warning_that_names_the_fix():
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **{**GOOD, "STATE_REDIS_URL": ""})
    assert result.returncode != 0
    assert "items.W002" in result.stderr and "noeviction" in result.stderr


def test_a_bad_database_url_never_shows_its_password():
    result = _run("manage.py", "check", DATABASE_URL="mysql://items:TopSecretPW@db:5432/items")
    assert result.returncode != 0
    assert "DATABASE_URL='mysql://items:***@db:5432/items' is not a PostgreSQL URL" in result.stderr
    assert "TopSecretPW" not in result.stderr + result.stdout
