"""The retry policy: which outcomes retry, and the backoff (pure code)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rota.domain.retry import InvalidRetryPolicy, RetryPolicy, exception_type
from rota.domain.states import RunState


def test_by_default_nothing_is_retried_as_before():
    p = RetryPolicy()
    assert not p.retries(RunState.FAILED, exit_code=1, error_summary="exit 1")
    assert not p.retries(RunState.FAILED, exit_code=None, error_summary="KeyError: 'x'")
    assert not p.retries(RunState.TIMED_OUT, exit_code=None, error_summary="timed out")


def test_any_retries_every_failure_and_timeouts_but_not_cancels():
    p = RetryPolicy.from_mapping({"exit_codes": "any", "exceptions": "any", "timed_out": True})
    assert p.retries(RunState.FAILED, exit_code=1, error_summary="exit 1")
    assert p.retries(RunState.FAILED, exit_code=None, error_summary="KeyError: 'x'")
    assert p.retries(RunState.TIMED_OUT, exit_code=None, error_summary="timed out")
    assert not p.retries(RunState.CANCELLED, exit_code=None, error_summary="")
    assert not p.retries(RunState.SUCCEEDED, exit_code=0, error_summary="")


def test_exit_codes_exceptions_and_timeouts_narrow_what_retries():
    p = RetryPolicy.from_mapping({"exit_codes": [75], "exceptions": ["TimeoutError"]})
    assert p.retries(RunState.FAILED, exit_code=75, error_summary="")
    assert not p.retries(RunState.FAILED, exit_code=1, error_summary="")
    assert p.retries(RunState.FAILED, exit_code=None, error_summary="TimeoutError: slow")
    assert not p.retries(RunState.FAILED, exit_code=None, error_summary="ValueError: bad")
    tb = "Traceback (most recent call last):\n  File x\nsocket.timeout: timed out"
    assert exception_type(tb) == "timeout"
    assert not RetryPolicy().retries(RunState.TIMED_OUT, exit_code=None, error_summary="")


def test_overrides_merge_field_by_field_and_bad_ones_say_which():
    job = RetryPolicy(max_attempts=5, backoff_seconds=2.0)
    merged = job.merged({"max_attempts": 1, "jitter": None})
    assert merged.max_attempts == 1 and merged.backoff_seconds == 2.0 and merged.jitter == 0.5
    assert RetryPolicy.from_mapping(job.merged({"exit_codes": "any"}).as_dict()).exit_codes == "any"
    with pytest.raises(InvalidRetryPolicy, match="unknown retry field"):
        job.merged({"attempts": 2})
    with pytest.raises(InvalidRetryPolicy, match="jitter"):
        job.merged({"jitter": 2})
    with pytest.raises(InvalidRetryPolicy, match="exit_codes"):
        job.merged({"exit_codes": ["1"]})
    assert RetryPolicy.from_mapping(job.as_dict()) == job


@given(
    base=st.floats(0, 1000),
    cap=st.floats(0, 10000),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_exponential_capped_and_jittered_within_bounds(base, cap, jitter, attempt, seed):
    p = RetryPolicy(backoff_seconds=base, backoff_max_seconds=cap, jitter=jitter)
    full = min(cap, base * 2 ** (attempt - 1))
    d = p.delay(attempt, random.Random(seed))
    assert full * (1 - jitter) - 1e-9 <= d <= full + 1e-9


def test_without_jitter_each_delay_doubles():
    p = RetryPolicy(backoff_seconds=1.0, backoff_max_seconds=5.0, jitter=0)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
