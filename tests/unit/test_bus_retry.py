"""Trying again through a NATS outage, and only through one."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from rota.bus.retry import through_outage


async def test_transient_errors_are_tried_again_until_the_call_succeeds():
    calls = []

    async def flaky(x, *, y):
        calls.append((x, y))
        if len(calls) < 3:
            raise (nats.errors.NoRespondersError if len(calls) == 1 else nats.errors.TimeoutError)()
        return x + y

    assert await through_outage(flaky, 1, y=2) == 3
    assert calls == [(1, 2)] * 3


async def test_answers_are_not_retried():
    calls = 0

    async def lost_cas():
        nonlocal calls
        calls += 1
        raise nats.js.errors.KeyWrongLastSequenceError()

    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await through_outage(lost_cas)
    assert calls == 1


async def test_an_outage_longer_than_the_deadline_is_raised():
    calls = 0

    async def down():
        nonlocal calls
        calls += 1
        raise nats.js.errors.NoStreamResponseError()

    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await through_outage(down, deadline=0.3)
    assert 2 <= calls <= 6
