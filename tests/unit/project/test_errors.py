"""One envelope for every error, whoever raises it."""

import json
import re

import pytest
from django.test import Client
from django.urls import path

from app import exceptions
from project import errors
from project.errors import ApiError, envelope_response
from tests.support import REPO, assert_envelope


def _all_error_classes(cls=ApiError):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_error_classes(sub)


ERROR_CLASSES = sorted(set(_all_error_classes()) | {ApiError}, key=lambda cls: cls.__name__)


def test_every_error_class_lives_in_one_of_the_two_error_modules():
    assert exceptions.IdempotencyInProgress in ERROR_CLASSES
    assert len(ERROR_CLASSES) >= 18
    homes = {cls.__module__ for cls in ERROR_CLASSES}
    assert homes == {"project.errors", "app.exceptions"}, "an ApiError defined elsewhere escapes this catalogue"


def _nginx_codes() -> set[str]:
    template = (REPO / "deploy" / "nginx" / "conf.d" / "items.conf.template").read_text()
    return set(re.findall(r'"error":"([a-z_]+)"', template))


def test_every_error_code_the_service_can_send_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text()
    codes = {cls.code for cls in ERROR_CLASSES} | _nginx_codes()
    assert {"rate_limited", "bad_gateway", "gateway_timeout"} <= codes
    missing = sorted(code for code in codes if f"`{code}`" not in readme)
    assert not missing, f"error codes missing from README.md: {missing}"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_renders_the_envelope(cls):
    error = cls()
    response = envelope_response(error)
    assert 400 <= response.status_code <= 599
    assert_envelope(response, cls.status, cls.code)
    assert cls.code == cls.code.lower() and " " not in cls.code
    if cls.status in (429, 503):
        assert int(response["Retry-After"]) >= 1, "a client told to come back must be told when"


def test_fields_appear_only_when_given():
    assert "fields" not in json.loads(envelope_response(errors.InvalidInput()).content)
    with_fields = envelope_response(errors.InvalidInput(fields={"name": ["bad"]}))
    assert json.loads(with_fields.content)["fields"] == {"name": ["bad"]}


def _boom(request):
    raise RuntimeError("a bug")


def _html_teapot(request):
    from django.http import HttpResponse

    return HttpResponse("<h1>nope</h1>", status=418)


urlpatterns = [path("boom", _boom), path("teapot", _html_teapot)]


@pytest.mark.urls("tests.unit.project.test_errors")
def test_an_unhandled_exception_is_a_500_envelope_with_no_traceback():
    response = Client(raise_request_exception=False).get("/boom")
    body = assert_envelope(response, 500, "internal_error")
    assert "RuntimeError" not in body["detail"]


@pytest.mark.urls("tests.unit.project.test_errors")
def test_an_html_error_from_elsewhere_is_rewritten_as_the_envelope():
    assert_envelope(Client().get("/teapot"), 418, "bad_request")


@pytest.mark.urls("tests.unit.project.test_errors")
def test_technical_404_page_under_debug_becomes_the_envelope(settings):
    settings.DEBUG = True
    assert_envelope(Client().get("/nothing-here"), 404, "not_found")


def test_disallowed_host_is_a_400_envelope(client):
    assert_envelope(client.get("/items", HTTP_HOST="evil.example"), 400, "bad_request")


def test_probes_answer_whatever_the_host_header(client):
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
