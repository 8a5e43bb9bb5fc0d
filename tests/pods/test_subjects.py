"""Topic names ↔ NATS subjects and KV keys (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rota.pods import subjects as s
from rota.pods.errors import InvalidTopic

#: What a NATS subject token and a KV key may hold, as rota writes them.
TOKEN = re.compile(r"^[A-Za-z0-9_=-]+$")


@pytest.mark.parametrize(
    ("topic", "subject"),
    [
        ("work.queue", "rota.topic.work.queue"),
        ("work.queue.result", "rota.topic.work.queue.result"),
        ("a b.c", "rota.topic.a=20b.c"),
        ("x..y", "rota.topic.x.=.y"),
        (".lead", "rota.topic.=.lead"),
        ("star*.>", "rota.topic.star=2A.=3E"),
        ("ü", "rota.topic.=C3=BC"),
        ("a=b", "rota.topic.a=3Db"),
    ],
)
def test_topic_subjects(topic: str, subject: str) -> None:
    assert s.topic_subject(topic) == subject
    assert s.topic_from_subject(subject) == topic


def test_invalid_topics_have_no_subject() -> None:
    with pytest.raises(InvalidTopic):
        s.topic_subject("")
    with pytest.raises(InvalidTopic):
        s.topic_subject("a\nb")


def test_reply_subject_names_host_task_and_pod() -> None:
    reply = s.reply_subject("node-1-abcd", "my task", "0123abcd")
    assert reply == "rota.pods.reply.node-1-abcd.my=20task.0123abcd"
    assert s.task_of_reply(reply) == s.escape_token("my task")
    assert s.task_of_reply("_INBOX.abc.def") is None


def test_queue_group_is_one_token_per_task() -> None:
    assert s.queue_group("worker") == "rota.pods.worker"
    assert s.queue_group("a.b") == "rota.pods.a=2Eb"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60))
def test_encoding_round_trips_and_is_a_valid_subject(topic: str) -> None:
    encoded = s.encode_topic(topic)
    assert s.decode_topic(encoded) == topic
    assert all(TOKEN.match(tok) for tok in encoded.split("."))


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
)
def test_encoding_is_one_to_one(a: str, b: str) -> None:
    if a != b:
        assert s.encode_topic(a) != s.encode_topic(b)
