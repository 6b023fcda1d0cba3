"""Backpressure on POST from the items queue's depth: the delay curve, sampling, and what a client sees."""

import threading
import time

import pytest
from prometheus_client import REGISTRY

from app.exceptions import QueueFull
from app.messaging import backpressure
from app.messaging.backpressure import Backpressure, DepthSampler, admission_delay_s
from tests.support import assert_envelope


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.mark.parametrize(
    ("depth", "delay_s"),
    [(None, 0.0), (0, 0.0), (100, 0.0), (150, 0.05), (190, 0.09), (199, 0.099), (200, None), (10_000, None)],
)
def test_the_delay_grows_linearly_between_the_watermarks_and_rejects_at_high(depth, delay_s):
    result = admission_delay_s(depth, low=100, high=200, max_delay_s=0.1)
    assert result == (None if delay_s is None else pytest.approx(delay_s))


def test_the_broker_is_asked_at_most_once_per_interval_whatever_the_request_rate():
    clock, calls = FakeClock(), []

    def read() -> int:
        calls.append(1)
        return 42

    sampler = DepthSampler(read, interval_s=0.1, clock=clock)
    for _ in range(1000):
        assert sampler.current() == 42
    assert len(calls) == 1
    clock.now += 0.1
    sampler.current()
    assert len(calls) == 2


def test_a_failed_sample_admits_and_is_retried_after_a_back_off():
    clock, answers = FakeClock(), iter([RuntimeError("broker gone"), 7])

    def read():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sampler = DepthSampler(read, interval_s=0.1, clock=clock)
    assert sampler.current() is None
    clock.now += 0.2
    assert sampler.current() is None  # still backing off
    clock.now += backpressure.FAILED_SAMPLE_BACKOFF_S
    assert sampler.current() == 7


def test_a_hung_broker_holds_a_post_at_most_max_wait_and_is_not_asked_twice_meanwhile():
    answer, calls = threading.Event(), []

    def hung_read() -> int:
        calls.append(1)
        answer.wait(5)
        return 7

    clock = FakeClock()
    sampler = DepthSampler(hung_read, interval_s=0.1, max_wait_s=0.05, clock=clock)
    started = time.monotonic()
    assert sampler.current() is None  # no depth yet: admitted
    assert time.monotonic() - started < 1.0
    clock.now = 1.0
    assert sampler.current() is None and calls == [1]  # the read in flight is not started again
    answer.set()
    for _ in range(100):
        if sampler.depth == 7:
            break
        time.sleep(0.01)
    assert sampler.current() == 7


def admission(depth: int) -> tuple[Backpressure, list[float]]:
    slept: list[float] = []
    sampler = DepthSampler(lambda: depth, interval_s=0.1, clock=FakeClock())
    return Backpressure(sampler, low=100, high=200, max_delay_s=0.1, sleep=slept.append), slept


def test_between_the_watermarks_a_post_waits_and_is_counted_as_delayed():
    gate, slept = admission(150)
    before = metric("items_backpressure_delayed_total")
    gate.admit()
    assert slept == [pytest.approx(0.05)]
    assert metric("items_backpressure_delayed_total") == before + 1
    assert metric("items_queue_depth") == 150


def test_below_low_a_post_passes_without_waiting():
    gate, slept = admission(99)
    gate.admit()
    assert slept == []


def test_over_high_a_post_is_refused_with_queue_full_and_counted():
    gate, slept = admission(250)
    before = metric("items_backpressure_rejected_total")
    with pytest.raises(QueueFull):
        gate.admit()
    assert slept == []
    assert metric("items_backpressure_rejected_total") == before + 1


@pytest.mark.django_db
def test_a_client_over_the_high_watermark_gets_503_queue_full_with_retry_after(post_item, monkeypatch, settings):
    gate, _ = admission(10_000)
    settings.BROKER_URL = "amqp://unused"  # backpressure only runs with a broker; the depth is faked
    monkeypatch.setattr(backpressure, "_instance", gate)
    response = post_item({"name": "too much"})
    assert_envelope(response, 503, "queue_full")
    assert int(response["Retry-After"]) >= 1


@pytest.mark.django_db
def test_without_a_broker_there_is_no_backpressure(post_item):
    assert post_item({"name": "embedded"}).status_code == 202
