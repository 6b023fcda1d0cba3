"""Tracing setup: with OTEL_EXPORTER_OTLP_ENDPOINT, an SDK provider batching spans to OTLP/HTTP at
<endpoint>/v1/traces; without, the API's no-op provider. In a child process: the provider is set once per process."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import json, django
django.setup()
from opentelemetry import trace
from project import tracing
tracing.setup("items-web")
provider = trace.get_tracer_provider()
processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
print(json.dumps({
    "provider": type(provider).__name__,
    "processors": [type(p).__name__ for p in processors],
    "endpoints": [p._batch_processor._exporter._endpoint for p in processors],
    "service": dict(getattr(provider, "resource", None).attributes) if hasattr(provider, "resource") else None,
}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_an_otlp_endpoint_turns_on_a_batching_otlp_http_exporter():
    probe = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert probe["provider"] == "TracerProvider"
    assert probe["processors"] == ["BatchSpanProcessor"]
    assert probe["endpoints"] == ["http://127.0.0.1:4318/v1/traces"]
    assert probe["service"]["service.name"] == "items-web"


def test_otel_service_name_names_the_service():
    probe = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", OTEL_SERVICE_NAME="items-canary")
    assert probe["service"]["service.name"] == "items-canary"


def test_without_an_endpoint_nothing_is_set_up():
    assert _probe()["provider"] == "ProxyTracerProvider"
