"""protocol: frames <-> messages in both dialects, and id validation."""

import json
from urllib.parse import quote

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lobbies.engine.protocol import (
    Dialect,
    Heartbeat,
    Join,
    Leave,
    PathError,
    decode_control,
    encode_introduction,
    is_valid_id,
    parse_connection_path,
    parse_introduction_path,
)

LIMITS = {"max_id_length": 256, "max_ids": 1000}


def test_json_text_frames_are_the_3x_dialect():
    frame = json.dumps({"type": "Join", "documentIds": ["a", "b", "a"]})
    assert decode_control(frame, **LIMITS) == (Dialect.JSON, Join(("a", "b")))


def test_msgpack_binary_frames_are_the_4x_dialect():
    frame = msgpack.packb({"type": "Leave", "documentIds": ["a"]})
    assert decode_control(frame, **LIMITS) == (Dialect.MSGPACK, Leave(("a",)))


@pytest.mark.parametrize("kind", ["Heartbeat", "❤️"])
def test_both_heartbeat_spellings(kind):
    assert decode_control(json.dumps({"type": kind}), **LIMITS)[1] == Heartbeat()
    assert decode_control(msgpack.packb({"type": kind}), **LIMITS)[1] == Heartbeat()


def test_ids_past_the_limit_are_named_apart_and_bounded():
    frame = json.dumps({"type": "Join", "documentIds": [str(i) for i in range(5000)]})
    _, message = decode_control(frame, max_id_length=256, max_ids=1000)
    assert message.document_ids == tuple(str(i) for i in range(1000))
    assert message.over_limit == tuple(str(i) for i in range(1000, 2000))  # at most as many
    leave = json.dumps({"type": "Leave", "documentIds": [str(i) for i in range(5000)]})
    assert len(decode_control(leave, max_id_length=256, max_ids=1000)[1].document_ids) == 5000


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        "null",
        json.dumps({"type": "Join"}),
        json.dumps({"type": "Join", "documentIds": "notalist"}),
        json.dumps({"type": "Join", "documentIds": [1, 2]}),
        json.dumps({"type": "Join", "documentIds": [""]}),
        json.dumps({"type": "Join", "documentIds": ["x" * 257]}),
        json.dumps({"type": "Join", "documentIds": ["bad\nid"]}),
        json.dumps({"type": "Join", "documentIds": ["\ud800"]}),
        json.dumps({"type": "Introduction", "userName": "x", "documentIds": ["a"]}),
        json.dumps({"type": []}),
        json.dumps({"type": {"a": 1}}),
        json.dumps({"type": None}),
        msgpack.packb({"type": [1, 2]}),
        msgpack.packb({"type": b"Join", "documentIds": ["a"]}),
        b"\xc1",
        b"\x92\x01",
        msgpack.packb({"type": "Join", "documentIds": ["a"]}) + b"\x00",
        msgpack.packb({1: 2}),
        b"\xdd\xff\xff\xff\xff",  # claims a 4-billion-element array
        b"\xdb\xff\xff\xff\xff",  # claims a 4 GiB string
    ],
)
def test_malformed_or_unknown_frames_decode_to_nothing(frame):
    dialect, message = decode_control(frame, **LIMITS)
    assert message is None
    assert dialect is (Dialect.JSON if isinstance(frame, str) else Dialect.MSGPACK)


@given(st.binary(max_size=512))
def test_no_binary_frame_crashes_the_decoder(frame):
    decode_control(frame, **LIMITS)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.fixed_dictionaries({"type": _json_values, "documentIds": _json_values}))
def test_no_message_shape_crashes_the_decoder(message):
    decode_control(msgpack.packb(message), **LIMITS)
    if not any(isinstance(v, bytes) for v in (message["type"], message["documentIds"])):
        try:
            frame = json.dumps(message)
        except (TypeError, ValueError):
            return
        decode_control(frame, **LIMITS)


@given(st.text(max_size=512))
def test_no_text_frame_crashes_the_decoder(frame):
    decode_control(frame, **LIMITS)


def test_introductions_carry_exactly_the_keys_each_client_accepts():
    text = encode_introduction(Dialect.JSON, "bob", ["a"])
    assert isinstance(text, str)
    assert json.loads(text) == {"type": "Introduction", "userName": "bob", "documentIds": ["a"]}
    packed = encode_introduction(Dialect.MSGPACK, "bob", ["a"])
    assert isinstance(packed, bytes)
    assert msgpack.unpackb(packed) == {
        "type": "Introduction",
        "peerId": "bob",
        "documentIds": ["a"],
    }


def test_paths_are_split_before_percent_decoding():
    assert parse_introduction_path(b"/introduction/a%2Fb%20c", 256) == "a/b c"
    assert parse_connection_path(b"/connection/al%C3%AFce/b%25ob/doc%2F1", 256) == (
        "alïce",
        "b%ob",
        "doc/1",
    )
    # A prefix (such as /t/<ticket>) is left to the router: only the tail is read.
    assert parse_introduction_path(b"/t/abc/introduction/p", 256) == "p"


@pytest.mark.parametrize(
    "path",
    [
        b"/introduction/",
        b"/introduction/a/b",
        b"/introduction/%ff%fe",
        b"/introduction/a%0Ab",
        b"/introduction/" + b"x" * 257,
        b"/connection/a/b",
        b"/connection/a/a/doc",
        b"/connection/a//doc",
        b"/elsewhere/a",
    ],
)
def test_bad_paths_are_refused(path):
    with pytest.raises(PathError):
        if b"connection" in path:
            parse_connection_path(path, 256)
        else:
            parse_introduction_path(path, 256)


def test_ids_allow_any_printable_unicode_and_refuse_control_characters():
    assert is_valid_id("spaceRacer-lobby", 256)
    assert is_valid_id("joueur 🚀 ñ", 256)
    assert not is_valid_id("tab\there", 256)
    assert not is_valid_id("", 256)
    assert not is_valid_id(42, 256)


SPOOFERS = [
    "admin\u202egnp.exe",  # right-to-left override: shows as "adminexe.png"
    "\u2066op\u2069",  # left-to-right isolate
    "ad\u200bmin",  # zero-width space
    "\ufeffadmin",  # byte order mark
    "a\u200eb",  # left-to-right mark
    "\U0001f3f4\U000e0067\U000e0062\U000e007f",  # tag characters (invisible text)
    "line\u2028break",  # line separator
]


@pytest.mark.parametrize("spoof", SPOOFERS)
def test_ids_and_nicknames_refuse_format_characters(spoof):
    assert not is_valid_id(spoof, 256)
    frame = json.dumps({"type": "Join", "documentIds": ["race"], "nickname": spoof})
    assert decode_control(frame, **LIMITS)[1] == Join(("race",), nickname=None)
    with pytest.raises(PathError):
        parse_introduction_path("/introduction/" + quote(spoof), 256)


NAMES = ["Zoë", "玩家", "joueur 🚀 ñ", "Ελένη", "مرحبا"]
# With joiners: an emoji sequence, and Persian ("I want") with its zero-width non-joiner.
NAMES += ["dev 👩\u200d💻", "می\u200cخواهم"]  # noqa: RUF001 (Arabic letters, as meant)


@pytest.mark.parametrize("name", NAMES)
def test_plain_non_ascii_names_are_still_ids_and_nicknames(name):
    assert is_valid_id(name, 256)
    frame = json.dumps({"type": "Join", "documentIds": ["race"], "nickname": name})
    assert decode_control(frame, **LIMITS)[1] == Join(("race",), nickname=name)
