"""The MiclowStdIO line protocol, fed as bytes: no processes, no NATS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rota.pods import protocol as p
from rota.pods.errors import InvalidTopic
from rota.pods.protocol import (
    BlockEnd,
    BlockStart,
    FrameDecoder,
    LineParser,
    Message,
    Plain,
    SingleLine,
    encode_frame,
    encode_publish,
    frame_lines,
    parse_line,
    pull_reply,
    quote_topic,
    unknown_command_reply,
)


def feed(*chunks: bytes) -> list[p.Event]:
    parser = LineParser()
    out: list[p.Event] = []
    for c in chunks:
        out += parser.feed(c)
    return out + parser.close()


# -- single lines -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('"topic": value', SingleLine("topic", "value")),
        ('"k":v', SingleLine("k", "v")),
        ('"msg"  :   hello  ', SingleLine("msg", "hello")),
        ('"k" :    ', SingleLine("k", "")),
        ('" k ": v', SingleLine(" k ", "v")),
        ('"ke\\"y": v', SingleLine('ke"y', "v")),
        ('"back\\\\slash": v', SingleLine("back\\slash", "v")),
        ('"k": " v with space "', SingleLine("k", '" v with space "')),
        ('"k": a: b', SingleLine("k", "a: b")),
        ('"topic"::', BlockStart("topic")),
        ('::"topic"', BlockEnd("topic")),
        ('::"to\\"pic"', BlockEnd('to"pic')),
    ],
)
def test_parse_line(line: str, kind: p.LineKind) -> None:
    assert parse_line(line) == kind


@pytest.mark.parametrize(
    "line",
    [
        "",
        "plain text",
        '  "k": v',  # leading blanks: never protocol
        '\t"k"::',
        '  ::"k"',
        '"": v',  # an empty topic is not a topic
        '"unterminated: v',
        '"k" v',
        '::"k" extra',
        ':: "k"',
        '"k"',
    ],
)
def test_plain_lines(line: str) -> None:
    assert parse_line(line) is None


def test_space_before_double_colon_is_a_single_line() -> None:
    # Only the exact '"k"::' opens a block; '"k" ::' is '"k": ":"' (as in miclow).
    assert parse_line('"k" ::') == SingleLine("k", ":")


def test_single_line_messages_and_plain_lines() -> None:
    events = feed(b'"a": 1\nhello\n"b":2\r\n')
    assert events == [Message("a", "1"), Plain("hello"), Message("b", "2")]


def test_block_keeps_lines_with_their_newlines() -> None:
    events = feed(b'"note"::\nline1\n\n  "x": not a message\n::"other"\n::"note"\nafter\n')
    assert events == [
        Message("note", 'line1\n\n  "x": not a message\n::"other"\n'),
        Plain("after"),
    ]


def test_block_keeps_crlf_as_written() -> None:
    assert feed(b'"n"::\r\nline1\r\n\r\n::"n"\r\n') == [Message("n", "line1\r\n\r\n")]


def test_nested_start_marker_is_data() -> None:
    events = feed(b'"key"::\n"key2"::\nvalue\n::"key2"\n::"key"\n')
    assert events == [Message("key", '"key2"::\nvalue\n::"key2"\n')]


def test_unfinished_block_is_flushed_at_end_of_stream() -> None:
    assert feed(b'"note"::\nline A\nline B') == [Message("note", "line A\nline B")]
    assert feed(b'"note"::\nline A\n') == [Message("note", "line A\n")]


def test_last_line_without_newline() -> None:
    assert feed(b'"a": 1\n"b": 2') == [Message("a", "1"), Message("b", "2")]
    assert feed(b"tail") == [Plain("tail")]


def test_byte_at_a_time() -> None:
    data = '"t": é\n"blk"::\nx\n::"blk"\nplain ü\n'.encode()
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed(*chunks) == [Message("t", "é"), Message("blk", "x\n"), Plain("plain ü")]


def test_stray_block_end_is_plain() -> None:
    assert feed(b'::"t"\n') == [Plain('::"t"')]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert feed(b'"t": \xff\n') == [Message("t", "\ufffd")]


def test_overlong_line_is_cut() -> None:
    parser = LineParser(max_line=10)
    events = parser.feed(b"x" * 25)
    assert events == [Plain("x" * 10), Plain("x" * 10)]
    assert parser.close() == [Plain("x" * 5)]


def test_overlong_block_is_published_and_closed() -> None:
    parser = LineParser(max_block=10)
    events = parser.feed(b'"b"::\n12345\n67890\nmore\n')
    assert events == [Message("b", "12345\n67890\n"), Plain("more")]
    assert not parser.in_block


# -- frames to the pod -------------------------------------------------------------


def test_frames() -> None:
    assert encode_frame("t", "hello") == b"t\n1\nhello\n"
    assert encode_frame("t", "a\nb\n") == b"t\n2\na\nb\n"
    assert encode_frame("t", "a\r\nb") == b"t\n2\na\nb\n"
    assert encode_frame("t", "") == b"t\n0\n"
    assert encode_frame("t", "\n") == b"t\n1\n\n"
    assert frame_lines("a\n\nb") == ["a", "", "b"]


def test_system_replies() -> None:
    assert pull_reply("T", "latest") == b"system.pull\n2\nsuccess\nlatest\n"
    assert pull_reply("T", None) == b"system.pull\n2\nerror\nNo message found for topic 'T'\n"
    assert unknown_command_reply("system.X") == b"system.X.result\n1\nUnknown Command\n"


def test_frame_decoder_reads_what_encode_frame_writes() -> None:
    data = encode_frame("a", "1\n2") + encode_frame("b", "") + encode_frame("c", "x")
    dec = FrameDecoder()
    frames = [f for i in range(len(data)) for f in dec.feed(data[i : i + 1])]
    assert [(f.topic, f.data) for f in frames] == [("a", "1\n2"), ("b", ""), ("c", "x")]


@pytest.mark.parametrize("topic", ["", "a\nb", "x" * 2000])
def test_check_topic(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        p.check_topic(topic)


# -- properties -------------------------------------------------------------------

# Topic names: anything but line breaks, quotes and backslashes included.
topics = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    min_size=1,
    max_size=40,
)
single_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    max_size=60,
)
block_lines = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
        max_size=30,
    ),
    max_size=6,
)


@given(topics)
def test_quoted_topic_round_trips(topic: str) -> None:
    assert parse_line(quote_topic(topic) + ": v") == SingleLine(topic, "v")
    assert parse_line(quote_topic(topic) + "::") == BlockStart(topic)
    assert parse_line("::" + quote_topic(topic)) == BlockEnd(topic)


@given(topics, single_values)
def test_single_line_round_trips(topic: str, value: str) -> None:
    value = value.strip()
    assert feed(encode_publish(topic, value)) == [Message(topic, value)]


@given(topics, block_lines, st.data())
def test_block_round_trips_in_any_chunks(topic: str, lines: list[str], data: st.DataObject) -> None:
    body = "".join(line + "\n" for line in lines)
    end = "::" + quote_topic(topic)
    if any(line == end for line in lines):
        return  # such data cannot travel in a block of this topic
    encoded = f"{quote_topic(topic)}::\n{body}{end}\n".encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=5)))
    chunks = [encoded[a:b] for a, b in zip([0, *cuts], [*cuts, len(encoded)], strict=True)]
    assert feed(*chunks) == [Message(topic, body)]


@given(st.lists(st.tuples(topics, single_values), max_size=5))
def test_a_stream_of_messages_round_trips(pairs: list[tuple[str, str]]) -> None:
    stream = b"".join(encode_publish(t, v) for t, v in pairs)
    expected = [
        Message(t, v)
        if "\n" not in v and "\r" not in v and v == v.strip()
        else Message(t, v + "\n")
        for t, v in pairs
    ]
    assert feed(stream) == expected


@given(st.text(max_size=80))
def test_frame_lines_count_matches_frame(data: str) -> None:
    frame = encode_frame("t", data)
    topic, count, *rest = frame.decode().split("\n")
    assert topic == "t"
    assert int(count) == len(frame_lines(data)) == len(rest) - 1
