"""RunSnapshot: encode/decode, advance, and the output tail."""

from __future__ import annotations

import copy
import dataclasses
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.domain.snapshot import OUTPUT_TAIL_BYTES, RunSnapshot, advance, decode, tail
from rota.domain.states import TRANSITIONS, InvalidTransition, RunState

# JSON values orjson can carry: no NaN/inf, integers within 64 bits.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
params_dicts = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
maybe_float = st.none() | st.floats(allow_nan=False, allow_infinity=False)

snapshots = st.builds(
    RunSnapshot,
    run_id=st.text(min_size=1),
    job=st.text(),
    kind=st.sampled_from(["command", "python", "http"]),
    target=st.text(),
    args=st.lists(st.text(), max_size=4),
    params=params_dicts,
    tag=st.text(),
    tags=st.lists(st.text(), max_size=3),
    timeout=maybe_float,
    max_attempts=st.integers(0, 100),
    state=st.sampled_from([s.value for s in RunState]),
    attempt=st.integers(0, 100),
    version=st.integers(0, 2**40),
    leader_epoch=st.integers(0, 2**40),
    worker_id=st.none() | st.text(),
    created_at=st.floats(0, 2e9),
    scheduled_for=maybe_float,
    started_at=maybe_float,
    finished_at=maybe_float,
    updated_at=st.floats(0, 2e9),
    error_summary=st.text(),
    result=json_values,
    exit_code=st.none() | st.integers(-255, 255),
    stdout=st.text(),
    stderr=st.text(),
)


def make(state: RunState | str = RunState.PENDING, **kw) -> RunSnapshot:
    return RunSnapshot(
        run_id="01ABC", job="nightly", kind="command", target="echo", state=state, **kw
    )


# --- encode / decode -----------------------------------------------------------


@settings(max_examples=150)
@given(snapshots)
def test_encode_decode_round_trip(snap):
    data = snap.encode()
    assert isinstance(data, bytes)
    back = decode(data)
    assert back == snap
    assert decode(back.encode()) == snap
    # The wire form is a JSON object with every field.
    assert set(orjson.loads(data)) == {f.name for f in dataclasses.fields(RunSnapshot)}


def test_round_trip_of_unicode_and_nested_params():
    snap = make(
        params={"名前": "ジョブ ✓", "nested": {"list": [1, 2.5, None, True, "😀"]}, "": {}},
        stdout="línea 1\nzeile 2 — 🚀\n",
        args=["--flag", "值"],
    )
    back = decode(snap.encode())
    assert back == snap
    assert back.params["nested"]["list"][4] == "😀"


def test_encoded_state_is_the_plain_name():
    raw = orjson.loads(make(RunState.CANCELLING).encode())
    assert raw["state"] == "CANCELLING"
    assert decode(make(RunState.CANCELLING).encode()).state == "CANCELLING"


@settings(max_examples=60)
@given(
    snap=snapshots,
    extra=st.dictionaries(
        st.text(min_size=1).filter(
            lambda k: k not in {f.name for f in dataclasses.fields(RunSnapshot)}
        ),
        json_values,
        min_size=1,
        max_size=4,
    ),
)
def test_decode_ignores_unknown_keys(snap, extra):
    raw = orjson.loads(snap.encode())
    raw.update(extra)
    assert decode(orjson.dumps(raw)) == snap


def test_decode_of_older_payload_fills_defaults():
    # A snapshot written by an older rota with only the required fields.
    old = orjson.dumps(
        {"run_id": "r1", "job": "j", "kind": "command", "target": "t", "shiny_new": 1}
    )
    snap = decode(old)
    assert snap == RunSnapshot(run_id="r1", job="j", kind="command", target="t")
    assert snap.state == "PENDING" and snap.version == 0 and snap.params == {}


def test_terminal_property_follows_state():
    assert make(RunState.SUCCEEDED).terminal
    assert make("SKIPPED").terminal
    assert not make(RunState.CANCELLING).terminal


# --- advance -------------------------------------------------------------------


def test_advance_bumps_version_sets_state_and_time():
    snap = make(RunState.PENDING, version=7, updated_at=1.0)
    new = advance(snap, RunState.RUNNING, now=1234.5, worker_id="w-1", attempt=1)
    assert new.version == 8
    assert new.state == "RUNNING"
    assert type(new.state) is str  # what goes on the wire
    assert new.updated_at == 1234.5
    assert new.worker_id == "w-1" and new.attempt == 1
    # Everything not named stays as it was.
    assert new.job == snap.job and new.params == snap.params and new.created_at == snap.created_at


def test_advance_accepts_a_string_target():
    new = advance(make("RUNNING"), "SUCCEEDED", now=2.0)
    assert new.state == RunState.SUCCEEDED


def test_advance_uses_the_clock_when_now_is_not_given():
    before = time.time()
    new = advance(make(), RunState.RUNNING)
    assert before <= new.updated_at <= time.time()


def test_advance_does_not_mutate_its_input():
    snap = make(RunState.RUNNING, version=3, params={"a": [1, 2]}, args=["x"], worker_id="w")
    frozen = copy.deepcopy(snap)
    new = advance(snap, RunState.SUCCEEDED, now=99.0, exit_code=0, stdout="done")
    assert snap == frozen
    assert new is not snap
    assert new != snap


def test_advance_change_cannot_override_version_or_state():
    # version and state are advance's to set, even if a caller passes them.
    new = advance(
        make(RunState.PENDING, version=1), RunState.RUNNING, now=1.0, version=50, state="FAILED"
    )
    assert new.version == 2
    assert new.state == "RUNNING"


@pytest.mark.parametrize(
    "current, target",
    [
        (RunState.SUCCEEDED, RunState.RUNNING),
        (RunState.CANCELLED, RunState.PENDING),
        (RunState.PENDING, RunState.SUCCEEDED),
    ],
)
def test_advance_raises_on_forbidden_transition(current, target):
    snap = make(current, version=4)
    frozen = copy.deepcopy(snap)
    with pytest.raises(InvalidTransition):
        advance(snap, target, now=1.0, worker_id="sneaky")
    assert snap == frozen


def test_advance_allows_same_state_updates():
    snap = make(RunState.RUNNING, version=10, heartbeat_at=1.0)
    new = advance(snap, RunState.RUNNING, now=5.0, heartbeat_at=5.0)
    assert new.state == "RUNNING"
    assert new.version == 11
    assert new.heartbeat_at == 5.0
    assert new.updated_at == 5.0


def test_advance_same_state_works_with_string_state():
    # A decoded snapshot has a plain-string state; RunState target must still compare equal.
    snap = decode(make(RunState.CANCELLING).encode())
    new = advance(snap, RunState.CANCELLING, now=3.0, error_summary="asked to stop")
    assert new.version == snap.version + 1


@settings(max_examples=150)
@given(snap=snapshots, target=st.sampled_from(list(RunState)), now=st.floats(0, 2e9))
def test_advance_matches_table_for_any_snapshot(snap, target, now):
    allowed = target == snap.state or target in TRANSITIONS[RunState(snap.state)]
    if allowed:
        new = advance(snap, target, now=now)
        assert new.version == snap.version + 1
        assert new.state == target.value
        assert new.updated_at == now
    else:
        with pytest.raises(InvalidTransition):
            advance(snap, target, now=now)


# --- tail ----------------------------------------------------------------------

# Text biased towards multi-byte characters (2, 3 and 4 bytes in UTF-8).
multibyte_text = st.text(
    alphabet=st.sampled_from("aZ\n é€中😀🚀ß") | st.characters(codec="utf-8"),
    max_size=80,
)


@settings(max_examples=300)
@given(text=multibyte_text, limit=st.integers(min_value=1, max_value=64))
def test_tail_keeps_the_last_bytes_on_a_character_boundary(text, limit):
    out = tail(text, limit)
    encoded = out.encode("utf-8")  # valid text: encodes without error
    assert len(encoded) <= limit
    assert text.endswith(out)
    # Maximal: one more character would not fit.
    if out != text:
        longer = text[len(text) - len(out) - 1 :]
        assert len(longer.encode("utf-8")) > limit


def test_tail_returns_short_text_unchanged():
    assert tail("héllo", 100) == "héllo"
    assert tail("", 5) == ""
    assert tail("abc", 3) == "abc"


def test_tail_never_splits_a_multibyte_character():
    # "€" is 3 bytes: 4 bytes of "a€€" = 1 byte of a "€" plus one whole "€".
    assert tail("a€€", 4) == "€"
    assert tail("😀😀", 5) == "😀"
    assert tail("😀😀", 3) == ""


def test_tail_default_limit():
    text = "x" * (OUTPUT_TAIL_BYTES + 10) + "END"
    out = tail(text)
    assert len(out.encode()) == OUTPUT_TAIL_BYTES
    assert out.endswith("END")


def test_tail_with_zero_limit_keeps_nothing():
    assert tail("abc", 0) == ""
