"""The run state machine: the TRANSITIONS table and the functions that read it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rota.domain.snapshot import RunSnapshot, advance
from rota.domain.states import (
    CLAIMABLE,
    OWNED,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    RunState,
    can_transition,
    check_transition,
    is_terminal,
    seed003_status,
)

S = RunState
ALL_STATES = list(RunState)
states = st.sampled_from(ALL_STATES)


def _reachable(start: RunState) -> set[RunState]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# --- the table itself -------------------------------------------------------


def test_every_state_has_a_row_and_rows_only_name_states():
    assert set(TRANSITIONS) == set(RunState)
    for row in TRANSITIONS.values():
        assert row <= set(RunState)


def test_no_state_transitions_to_itself_in_the_table():
    # Same-state updates go through advance(), never through the table.
    for state, row in TRANSITIONS.items():
        assert state not in row


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(state):
    assert TRANSITIONS[state] == frozenset()
    assert is_terminal(state)
    for target in RunState:
        assert not can_transition(state, target)
        with pytest.raises(InvalidTransition):
            check_transition(state, target)


def test_terminal_set_is_exactly_the_states_without_exits():
    assert {s for s, row in TRANSITIONS.items() if not row} == TERMINAL
    assert {s for s in RunState if is_terminal(s)} == TERMINAL
    assert {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.SKIPPED} == TERMINAL


def test_claimable_and_owned_states_are_live_and_disjoint():
    assert not (CLAIMABLE & TERMINAL)
    assert not (OWNED & TERMINAL)
    assert not (CLAIMABLE & OWNED)
    # A claim moves the run into an owned state.
    for state in CLAIMABLE:
        assert TRANSITIONS[state] & OWNED


def test_every_state_is_reachable_from_pending():
    assert _reachable(S.PENDING) == set(RunState)


@pytest.mark.parametrize("state", sorted(set(RunState) - TERMINAL))
def test_every_live_state_can_end_and_can_be_cancelled(state):
    reachable = _reachable(state)
    assert reachable & TERMINAL
    assert S.CANCELLED in reachable


# --- check_transition / can_transition against the table -------------------


@settings(max_examples=200)
@given(current=states, target=states)
def test_check_transition_agrees_with_table(current, target):
    allowed = target in TRANSITIONS[current]
    assert can_transition(current, target) is allowed
    # Plain strings (what a decoded snapshot holds) behave the same.
    assert can_transition(current.value, target.value) is allowed
    if allowed:
        check_transition(current, target)
        check_transition(current.value, target.value)
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition(current.value, target.value)
        assert info.value.current is current
        assert info.value.target is target
        assert str(current) in str(info.value) and str(target) in str(info.value)


def test_all_pairs_exhaustively():
    # The hypothesis test above samples; this one covers every one of the 100 pairs.
    for current, target in itertools.product(RunState, RunState):
        allowed = target in TRANSITIONS[current]
        if allowed:
            check_transition(current, target)
        else:
            with pytest.raises(InvalidTransition):
                check_transition(current, target)


def test_invalid_transition_is_a_non_retryable_value_error():
    with pytest.raises(ValueError) as info:
        check_transition(S.SUCCEEDED, S.RUNNING)
    assert isinstance(info.value, InvalidTransition)
    assert info.value.retryable is False


def test_unknown_state_names_are_rejected():
    with pytest.raises(ValueError):
        can_transition("PENDING", "DONE")
    with pytest.raises(ValueError):
        check_transition("BOGUS", "RUNNING")
    with pytest.raises(ValueError):
        is_terminal("finished")


@pytest.mark.parametrize(
    "path",
    [
        [S.PENDING, S.RUNNING, S.SUCCEEDED],
        [S.PENDING, S.ASSIGNED, S.RUNNING, S.SUCCEEDED],
        [S.PENDING, S.RUNNING, S.CANCELLING, S.CANCELLED],
        [S.PENDING, S.RUNNING, S.ORPHANED, S.RUNNING, S.FAILED],
        [S.PENDING, S.RUNNING, S.TIMED_OUT],
        [S.PENDING, S.RUNNING, S.PENDING, S.RUNNING, S.SUCCEEDED],  # a failed attempt retried
        [S.PENDING, S.SKIPPED],
        [S.PENDING, S.CANCELLED],
        [S.ORPHANED, S.ASSIGNED],
        [S.CANCELLING, S.SUCCEEDED],
    ],
    ids=lambda p: "->".join(s.value for s in p),
)
def test_lifecycle_paths_that_must_be_allowed(path):
    for current, target in itertools.pairwise(path):
        check_transition(current, target)


@pytest.mark.parametrize(
    "current, target",
    [
        (S.SUCCEEDED, S.RUNNING),
        (S.CANCELLED, S.PENDING),
        (S.PENDING, S.SUCCEEDED),
        (S.PENDING, S.TIMED_OUT),
        (S.PENDING, S.ORPHANED),
        (S.FAILED, S.ORPHANED),
        (S.SKIPPED, S.PENDING),
        (S.CANCELLING, S.PENDING),
        (S.CANCELLING, S.RUNNING),
        (S.RUNNING, S.SKIPPED),
    ],
)
def test_transitions_that_must_not_be_allowed(current, target):
    assert not can_transition(current, target)
    with pytest.raises(InvalidTransition):
        check_transition(current, target)


# --- random walk over the lifecycle ------------------------------------------


class RunLifecycle(RuleBasedStateMachine):
    """Drive one snapshot through arbitrary attempted transitions with advance()."""

    def __init__(self) -> None:
        super().__init__()
        self.snap = RunSnapshot(run_id="01TEST", job="job", kind="command", target="true")
        self.clock = 1_000.0
        self.ended_in: str | None = None
        self.applied = 0

    def _attempt(self, dest: RunState) -> None:
        before = self.snap
        self.clock += 1.0
        if dest == before.state or can_transition(before.state, dest):
            new = advance(before, dest, now=self.clock)
            assert new.version == before.version + 1
            assert new.state == dest
            assert new.updated_at == self.clock
            self.snap = new
            self.applied += 1
        else:
            with pytest.raises(InvalidTransition):
                advance(before, dest, now=self.clock)

    @rule(dest=states)
    def try_any_state(self, dest):
        self._attempt(dest)

    @precondition(lambda self: not is_terminal(self.snap.state))
    @rule(data=st.data())
    def follow_allowed_edge(self, data):
        dest = data.draw(st.sampled_from(sorted(TRANSITIONS[RunState(self.snap.state)])))
        self._attempt(dest)
        assert self.snap.state == dest

    @invariant()
    def terminal_is_absorbing(self):
        if self.ended_in is not None:
            assert self.snap.state == self.ended_in
        elif is_terminal(self.snap.state):
            self.ended_in = self.snap.state

    @invariant()
    def version_counts_applied_transitions(self):
        assert self.snap.version == self.applied
        assert self.snap.state in {s.value for s in RunState}


RunLifecycle.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestRunLifecycle = RunLifecycle.TestCase


@settings(max_examples=100)
@given(st.data())
def test_random_walk_of_allowed_transitions(data):
    snap = RunSnapshot(run_id="01WALK", job="job", kind="command", target="true")
    for step in range(30):
        row = TRANSITIONS[RunState(snap.state)]
        if not row:
            # Reached a terminal state: every other state is refused.
            assert is_terminal(snap.state)
            dest = data.draw(states.filter(lambda s, here=snap.state: s != here))
            with pytest.raises(InvalidTransition):
                advance(snap, dest, now=float(step))
            break
        assert not is_terminal(snap.state)
        dest = data.draw(st.sampled_from(sorted(row)))
        new = advance(snap, dest, now=float(step))
        assert new.version == snap.version + 1
        snap = new


# --- seed 003 vocabulary -----------------------------------------------------

SEED003_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
SEED003_VOCAB = {"PENDING", "RUNNING", "CANCELLING"} | SEED003_TERMINAL


def test_seed003_status_specific_mappings():
    assert seed003_status(S.SUCCEEDED) == "COMPLETED"
    assert seed003_status(S.TIMED_OUT) == "FAILED"
    assert seed003_status(S.FAILED) == "FAILED"
    assert seed003_status(S.SKIPPED) == "CANCELLED"
    assert seed003_status(S.ORPHANED) == "PENDING"
    assert seed003_status(S.ASSIGNED) == "PENDING"
    assert seed003_status("RUNNING") == "RUNNING"


@pytest.mark.parametrize("state", ALL_STATES)
def test_seed003_status_covers_every_state_and_keeps_terminality(state):
    status = seed003_status(state)
    assert status in SEED003_VOCAB
    assert (status in SEED003_TERMINAL) is is_terminal(state)
    assert seed003_status(state.value) == status
