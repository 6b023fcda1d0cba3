"""The client IP that rate limits key on: forwarded headers count only from trusted proxies."""

import pytest
from django.test import RequestFactory

from project.net import client_ip


@pytest.fixture
def request_from():
    factory = RequestFactory()

    def make(peer, **headers):
        return factory.get("/items", REMOTE_ADDR=peer, headers=headers)

    return make


def test_a_direct_client_is_its_peer_address(request_from):
    assert client_ip(request_from("203.0.113.9")) == "203.0.113.9"


def test_a_spoofed_forwarded_header_from_an_untrusted_peer_is_ignored(request_from):
    request = request_from("203.0.113.9", **{"X-Forwarded-For": "1.2.3.4", "X-Real-IP": "5.6.7.8"})
    assert client_ip(request) == "203.0.113.9"


def test_behind_the_trusted_proxy_the_forwarded_client_counts(request_from):
    assert client_ip(request_from("127.0.0.1", **{"X-Forwarded-For": "198.51.100.7"})) == "198.51.100.7"


def test_a_client_cannot_prepend_a_fake_hop_through_the_proxy(request_from):
    # The client sent "X-Forwarded-For: 1.2.3.4"; Nginx appended the address it really saw.
    request = request_from("127.0.0.1", **{"X-Forwarded-For": "1.2.3.4, 198.51.100.7"})
    assert client_ip(request) == "198.51.100.7"


def test_x_real_ip_is_used_when_there_is_no_forwarded_for(request_from):
    assert client_ip(request_from("::1", **{"X-Real-IP": "2001:db8::5"})) == "2001:db8::5"


def test_garbage_in_forwarded_for_falls_back_to_the_peer(request_from):
    assert client_ip(request_from("127.0.0.1", **{"X-Forwarded-For": "not-an-ip"})) == "127.0.0.1"


def test_trusted_proxies_come_from_settings(request_from, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_ip(request_from("127.0.0.1", **{"X-Forwarded-For": "1.2.3.4"})) == "127.0.0.1"
    assert client_ip(request_from("10.1.2.3", **{"X-Forwarded-For": "1.2.3.4"})) == "1.2.3.4"
