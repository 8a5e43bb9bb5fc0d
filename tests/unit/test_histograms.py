"""The run timing histograms: bucket placement, exposition order, storage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rota.domain.histograms import BOUNDS, Histogram, RunTimings


def test_a_bound_is_inclusive_and_big_values_go_to_inf():
    h = Histogram((1.0, 5.0))
    for v in (0.0, 1.0, 1.0001, 5.0, 6.0, 10_000.0):
        h.observe(v)
    assert h.counts == [2, 2, 2]
    assert h.cumulative() == [("1.0", 2), ("5.0", 4), ("+Inf", 6)]
    assert h.count == 6
    assert h.total == 10_013.0001


def test_nan_is_ignored():
    h = Histogram()
    h.observe(float("nan"))
    assert h.count == 0 and h.total == 0.0


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=50))
def test_cumulative_counts_never_fall_and_end_at_the_count(values):
    h = Histogram()
    for v in values:
        h.observe(v)
    counts = [n for _, n in h.cumulative()]
    assert counts == sorted(counts)
    assert counts[-1] == len(values)


def test_round_trip_through_the_stored_document():
    t = RunTimings()
    t.observe_claim(100.0, 100.02)
    t.observe_start(100.0, 160.0, 161.5)
    again = RunTimings.from_dict(t.as_dict(), bounds=BOUNDS)
    assert again.as_dict() == t.as_dict()


def test_start_lateness_is_from_the_nominal_time_and_never_negative():
    t = RunTimings()
    t.observe_start(created_at=100.0, scheduled_for=160.0, started_at=159.999)
    t.observe_start(created_at=100.0, scheduled_for=None, started_at=103.0)
    assert t.start_lateness.total == 3.0
    assert t.start_lateness.count == 2


def test_other_bounds_or_a_broken_document_start_afresh():
    odd = Histogram((1.0, 2.0))
    odd.observe(1.5)
    loaded = RunTimings.from_dict({"start_lateness": odd.as_dict()}, bounds=BOUNDS)
    assert loaded.start_lateness.bounds == BOUNDS and loaded.start_lateness.count == 0
    # Read as stored when no bounds are imposed (what /metrics does).
    assert RunTimings.from_dict({"start_lateness": odd.as_dict()}).start_lateness.count == 1
    broken = {"dispatch_latency": {"bounds": [1, 2], "counts": [1]}, "start_lateness": "x"}
    assert RunTimings.from_dict(broken).dispatch_latency.count == 0
    assert RunTimings.from_dict(None).start_lateness.count == 0
