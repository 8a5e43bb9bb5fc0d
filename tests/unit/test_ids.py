"""Identifiers: run ids (ULIDs), worker ids, subject-safe tokens, message ids."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from rota.domain.ids import msg_id, new_event_id, new_run_id, new_worker_id, safe_token

CROCKFORD = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_run_id_shape():
    rid = new_run_id()
    assert len(rid) == 26
    assert CROCKFORD.match(rid), rid
    assert "." not in rid and "*" not in rid and ">" not in rid


def test_run_ids_are_unique():
    ids = [new_run_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


def test_run_id_carries_the_creation_time():
    before = int(time.time() * 1000)
    rid = new_run_id()
    after = int(time.time() * 1000)
    assert before <= ULID.from_str(rid).milliseconds <= after


def test_run_ids_sort_by_creation_time():
    ids = []
    for _ in range(12):
        ids.append(new_run_id())
        time.sleep(0.002)  # ULIDs order by millisecond; within one ms the order is random
    assert sorted(ids) == ids
    stamps = [ULID.from_str(i).milliseconds for i in ids]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_event_ids_are_ulids_too():
    a, b = new_event_id(), new_event_id()
    assert CROCKFORD.match(a) and CROCKFORD.match(b)
    assert a != b


# --- safe_token ----------------------------------------------------------------

FORBIDDEN = set(".*>")


@settings(max_examples=300)
@given(st.text())
def test_safe_token_output_is_one_clean_token(text):
    out = safe_token(text)
    assert out
    assert not (set(out) & FORBIDDEN)
    assert not any(c.isspace() for c in out)
    # One output character per input character, so distinct lengths never collide.
    assert len(out) == max(len(text), 1)
    # Idempotent: a token is already safe.
    assert safe_token(out) == out


@settings(max_examples=100)
@given(st.text(alphabet="abcxyzABCXYZ0189-_", min_size=1))
def test_safe_token_keeps_safe_text_unchanged(text):
    assert safe_token(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "_"),
        ("host.example.com", "host_example_com"),
        ("a b\tc\nd", "a_b_c_d"),
        ("rota.*.>", "rota____"),
        ("gpu-large_2", "gpu-large_2"),
    ],
)
def test_safe_token_examples(text, expected):
    assert safe_token(text) == expected


# nats-py's own check for KV keys (worker ids are keys of rota_workers / rota_heartbeats).
NATS_KV_KEY = re.compile(r"^[-/_=\.a-zA-Z0-9]+$")


def test_worker_id_is_a_valid_nats_kv_key_for_non_ascii_node_names():
    wid = new_worker_id("café")
    assert NATS_KV_KEY.match(wid), wid


def test_nats_kv_key_pattern_matches_nats_py():
    # Keeps the copy above honest if nats-py changes its rule.
    from nats.js import kv

    assert kv.VALID_KEY_RE.pattern == NATS_KV_KEY.pattern


# --- worker ids, message ids -----------------------------------------------------


def test_worker_ids_differ_per_call_for_the_same_node():
    ids = {new_worker_id("node-1") for _ in range(50)}
    assert len(ids) == 50


def test_worker_id_is_derived_from_a_safe_node_name():
    wid = new_worker_id("pod.a b")
    prefix, _, suffix = wid.rpartition("-")
    assert prefix == "pod_a_b"
    assert re.fullmatch(r"[0-9a-f]{8}", suffix)
    assert not (set(wid) & FORBIDDEN)


def test_worker_id_for_empty_node_is_still_a_token():
    wid = new_worker_id("")
    assert wid.startswith("_-")
    assert len(wid) == len("_-") + 8


def test_msg_id_is_unique_per_run_and_attempt():
    rid = new_run_id()
    assert msg_id(rid, 1) == f"{rid}:1"
    assert msg_id(rid, 1) != msg_id(rid, 2)
    assert msg_id(rid, 1) != msg_id(new_run_id(), 1)
