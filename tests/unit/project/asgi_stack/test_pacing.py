"""How 503s are paced under overload and held for connections that ignore Retry-After."""

import pytest

from project.asgi_stack.pacing import RejectionPacer, RetryTarpit


def test_rejections_past_the_pace_are_held_back_up_to_the_retry_after_and_a_quiet_spell_resets_it():
    pacer = RejectionPacer(10, max_delay_s=0.5, burst_s=0.1)  # 10/s, a 0.1 s burst
    assert [round(pacer.delay_s(100.0), 3) for _ in range(10)] == [0, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5]
    assert pacer.delay_s(110.0) == 0  # ten quiet seconds later: at once again
    assert all(RejectionPacer(0, max_delay_s=1).delay_s(100.0) == 0 for _ in range(100))  # 0 = never held


def test_a_connection_that_re_sends_within_retry_after_is_held_until_then_and_others_are_not():
    tarpit = RetryTarpit(1.0)
    tarpit.answered("conn-7", 100.0)
    assert tarpit.delay_s("conn-7", 100.2) == pytest.approx(0.8)  # re-sent at once: waits out its Retry-After
    assert tarpit.delay_s("conn-7", 100.95) == 0  # came back (nearly) on time
    assert tarpit.delay_s("conn-8", 100.2) == 0  # another connection
    tarpit.answered("conn-8", 101.5)
    assert list(tarpit.last_sent) == ["conn-8"]  # conn-7's entry outlived its Retry-After and is gone
