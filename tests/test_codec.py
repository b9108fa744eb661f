"""Tests of the sans-IO frame codec: framing, validation and error classification."""
from __future__ import annotations

import random
import struct

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from dim import errors
from dim.protocol import codec
from dim.protocol import frames as F


def framed(obj: object) -> bytes:
    """A JSON value framed with its length prefix."""
    return codec.encode_payload(obj)


def raw(payload: bytes) -> bytes:
    """Arbitrary bytes framed with their length prefix."""
    return struct.pack(">I", len(payload)) + payload


SAMPLE = [
    F.Hello(v=1, token="tok", device="laptop"),
    F.Send(id="c-1", to="bob", body="hi there \u00e9\u6f22"),
    F.Send(id="c-2", group="g1", body="to the group"),
    F.Ack(seq=7),
    F.Sync(after=3, limit=50),
    F.Ping(),
    F.Typing(to="bob"),
    F.Read(seq=9),
]


class FramingTests(unittest.TestCase):
    """Frames split anywhere decode to the same frames."""

    def test_roundtrip_whole(self) -> None:
        """Encoding then decoding gives back equal frames."""
        d = codec.FrameDecoder()
        self.assertEqual(d.feed(codec.encode_many(SAMPLE)), SAMPLE)

    def test_byte_by_byte(self) -> None:
        """Feeding one byte at a time yields every frame exactly once, in order."""
        d = codec.FrameDecoder()
        data = codec.encode_many(SAMPLE)
        out = []
        for i in range(len(data)):
            out.extend(d.feed(data[i:i + 1]))
        self.assertEqual(out, SAMPLE)
        self.assertEqual(d.buffered, 0)

    def test_random_chunks(self) -> None:
        """Random chunk boundaries change nothing."""
        data = codec.encode_many(SAMPLE * 20)
        rng = random.Random(7)
        for _ in range(50):
            d = codec.FrameDecoder()
            out, pos = [], 0
            while pos < len(data):
                n = rng.randint(1, 64)
                out.extend(d.feed(data[pos:pos + n]))
                pos += n
            self.assertEqual(out, SAMPLE * 20)

    def test_server_frames_roundtrip(self) -> None:
        """Node-to-client frames decode with the server frame set, `from` renamed."""
        frames = [
            F.Welcome(user="a", node="n1", heartbeat=30, max_frame=65536, last_seq=0),
            F.Sent(id="x", mid="m1", seq=1, ts=1700000000000),
            F.Msg(mid="m1", id="x", from_="a", to="b", body="hi", kind="text", ts=1, seq=2),
            F.Delivered(id="x", mid="m1", by="b"),
            F.Synced(after=0, last_seq=2, more=False),
            F.Pong(), F.Error(code="bad_request", message="no", ref="x"),
            F.Goaway(reason="shutdown"),
        ]
        data = codec.encode_many(frames)
        self.assertIn(b'"from":"a"', data)
        self.assertEqual(codec.FrameDecoder(F.SERVER_FRAME_TYPES).feed(data), frames)

    def test_unset_optionals_left_out(self) -> None:
        """Optional fields that are unset are not written."""
        data = codec.encode(F.Msg(mid="m", id="i", from_="a", to="b", body="x", kind="text", ts=1,
                                  seq=1))
        obj = msgspec.json.decode(data[4:])
        self.assertNotIn("group", obj)
        self.assertNotIn("file", obj)

    def test_msg_always_carries_body_and_kind(self) -> None:
        """A msg names its kind and body even when they are "text" and "", as the contract
        lists them."""
        data = codec.encode(F.Msg(mid="m", id="i", from_="a", to="b", body="", kind="text",
                                  ts=1, seq=1))
        obj = msgspec.json.decode(data[4:])
        self.assertEqual((obj["body"], obj["kind"]), ("", "text"))

    def test_unknown_fields_ignored(self) -> None:
        """Fields the contract does not know are ignored."""
        d = codec.FrameDecoder()
        self.assertEqual(d.feed(framed({"type": "ack", "seq": 1, "future": [1, 2]})),
                         [F.Ack(seq=1)])


class FatalErrorTests(unittest.TestCase):
    """Broken framing gives one fatal error and ends the stream."""

    def assertFatal(self, data: bytes, cls: type[errors.DimError]) -> None:
        d = codec.FrameDecoder()
        out = d.feed(data)
        self.assertEqual(len(out), 1, out)
        self.assertIsInstance(out[0], cls)
        self.assertTrue(out[0].fatal)
        self.assertTrue(d.closed)
        self.assertEqual(d.feed(framed({"type": "ping"})), [])

    def test_zero_length(self) -> None:
        """A zero length prefix is bad_frame."""
        self.assertFatal(b"\x00\x00\x00\x00", errors.BadFrame)

    def test_oversize_prefix_rejected_before_payload(self) -> None:
        """A length above max_frame is rejected as soon as the prefix is read."""
        d = codec.FrameDecoder(max_frame=100)
        out = d.feed(struct.pack(">I", 101))
        self.assertEqual([e.code for e in out], ["frame_too_large"])
        self.assertEqual(d.buffered, 0)

    def test_max_frame_exactly_allowed(self) -> None:
        """A frame of exactly max_frame bytes is accepted."""
        payload = b'{"type":"ping","pad":"' + b"x" * 100 + b'"}'
        d = codec.FrameDecoder(max_frame=len(payload))
        self.assertEqual(d.feed(raw(payload)), [F.Ping()])

    def test_not_json(self) -> None:
        """Bytes that are not JSON are bad_frame."""
        self.assertFatal(raw(b"hello"), errors.BadFrame)

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are bad_frame."""
        self.assertFatal(raw(b'{"type":"\xff"}'), errors.BadFrame)

    def test_not_object(self) -> None:
        """JSON that is not an object is bad_frame."""
        self.assertFatal(framed([1, 2]), errors.BadFrame)

    def test_type_not_string(self) -> None:
        """An object whose type is not a string is bad_frame."""
        self.assertFatal(framed({"type": 3}), errors.BadFrame)

    def test_type_missing(self) -> None:
        """An object without a type is bad_frame."""
        self.assertFatal(framed({"seq": 3}), errors.BadFrame)

    def test_frames_before_fatal_error_kept(self) -> None:
        """Frames decoded before the broken one are still returned first."""
        d = codec.FrameDecoder()
        out = d.feed(framed({"type": "ping"}) + raw(b"junk"))
        self.assertEqual(out[0], F.Ping())
        self.assertEqual(out[1].code, "bad_frame")


class NestingTests(unittest.TestCase):
    """JSON nested deeper than any frame is bad_frame, whatever the stack depth left."""

    def nested(self, levels: int) -> bytes:
        return raw(b'{"type":"send","id":"x","to":"bob","body":' + b"[" * levels
                   + b"]" * levels + b"}")

    def test_deep_nesting_is_bad_frame(self) -> None:
        """990 levels of arrays give bad_frame after the frames before them, no exception."""
        for levels in (F.MAX_NESTING, 990, 100_000):
            d = codec.FrameDecoder(max_frame=1 << 20)
            out = d.feed(framed({"type": "ping"}) + self.nested(levels)
                         + framed({"type": "ping"}))
            self.assertEqual(out[0], F.Ping())
            self.assertEqual([e.code for e in out[1:]], ["bad_frame"], levels)
            self.assertTrue(d.closed)

    def test_deep_nesting_with_little_stack_left(self) -> None:
        """Even with almost no recursion depth left, a deep frame is bad_frame, not raised."""
        import sys

        d = codec.FrameDecoder(max_frame=1 << 20)
        data = framed({"type": "ping"}) + self.nested(990)
        limit = sys.getrecursionlimit()

        def deep(n: int) -> list[codec.Decoded]:
            return deep(n - 1) if n else d.feed(data)

        sys.setrecursionlimit(200)
        try:
            out = deep(150)
        finally:
            sys.setrecursionlimit(limit)
        self.assertEqual(out[0], F.Ping())
        self.assertEqual(out[1].code, "bad_frame")

    def test_brackets_in_strings_are_text(self) -> None:
        """A body full of brackets and escaped quotes is a message, not nesting."""
        body = '[{"\\' * 200 + '\\"' + "[" * 500
        d = codec.FrameDecoder()
        [frame] = d.feed(framed({"type": "send", "id": "x", "to": "bob", "body": body}))
        self.assertEqual(frame.body, body)

    def test_shallow_frame_with_many_brackets(self) -> None:
        """Many sibling arrays at a shallow depth are not too deep (a bad field, not a frame)."""
        d = codec.FrameDecoder()
        out = d.feed(framed({"type": "send", "id": "x", "to": "bob", "body": [[]] * 200}))
        self.assertEqual([e.code for e in out], ["bad_request"])


class FieldErrorTests(unittest.TestCase):
    """Well-formed frames with bad content give a non-fatal error and the stream goes on."""

    def check(self, obj: dict, code: str, ref: str | None = None) -> None:
        d = codec.FrameDecoder()
        out = d.feed(framed(obj) + framed({"type": "ping"}))
        self.assertEqual(len(out), 2, out)
        self.assertIsInstance(out[0], errors.DimError)
        self.assertEqual(out[0].code, code)
        self.assertFalse(out[0].fatal)
        self.assertEqual(out[0].ref, ref)
        self.assertEqual(out[1], F.Ping())

    def test_unknown_type(self) -> None:
        """An unknown type is unknown_type, with the frame's id as ref."""
        self.check({"type": "dance", "id": "d1"}, "unknown_type", "d1")

    def test_server_type_from_client(self) -> None:
        """A node-to-client type sent by a client is unknown_type."""
        self.check({"type": "welcome"}, "unknown_type")

    def test_missing_field(self) -> None:
        """A missing field is bad_request."""
        self.check({"type": "ack"}, "bad_request")

    def test_negative_seq(self) -> None:
        """A negative seq is bad_request."""
        self.check({"type": "ack", "seq": -1}, "bad_request")

    def test_send_both_targets(self) -> None:
        """A send with both to and group is bad_request with ref."""
        self.check({"type": "send", "id": "s", "to": "a", "group": "g", "body": "x"},
                   "bad_request", "s")

    def test_send_no_target(self) -> None:
        """A send with neither to nor group is bad_request."""
        self.check({"type": "send", "id": "s", "body": "x"}, "bad_request", "s")

    def test_send_id_too_long(self) -> None:
        """An id over 64 characters is bad_request."""
        self.check({"type": "send", "id": "x" * 65, "to": "a", "body": "x"},
                   "bad_request", "x" * 65)

    def test_send_id_not_printable(self) -> None:
        """An id with a control character is bad_request."""
        self.check({"type": "send", "id": "a\nb", "to": "a", "body": "x"}, "bad_request", "a\nb")

    def test_send_bad_user_name(self) -> None:
        """A recipient name outside the user name alphabet is bad_request."""
        self.check({"type": "send", "id": "s", "to": "no spaces", "body": "x"}, "bad_request", "s")

    def test_body_too_large(self) -> None:
        """A body over 16 KiB of UTF-8 is too_large, counted in bytes not characters."""
        body = "\u00e9" * (8 * 1024 + 1)  # 16386 bytes, 8193 characters
        self.check({"type": "send", "id": "s", "to": "a", "body": body}, "too_large", "s")

    def test_body_at_limit(self) -> None:
        """A body of exactly 16 KiB is accepted."""
        d = codec.FrameDecoder()
        out = d.feed(framed({"type": "send", "id": "s", "to": "a", "body": "x" * 16384}))
        self.assertIsInstance(out[0], F.Send)

    def test_text_without_body(self) -> None:
        """A text message needs a body."""
        self.check({"type": "send", "id": "s", "to": "a"}, "bad_request", "s")

    def test_unknown_kind(self) -> None:
        """A kind other than text, image or file is bad_request."""
        self.check({"type": "send", "id": "s", "to": "a", "body": "x", "kind": "video"},
                   "bad_request", "s")

    def test_file_kind_needs_file(self) -> None:
        """An image message without a file is bad_request."""
        self.check({"type": "send", "id": "s", "to": "a", "kind": "image"}, "bad_request", "s")

    def test_hello_wrong_version(self) -> None:
        """A hello with a version other than 1 is bad_request."""
        self.check({"type": "hello", "v": 2, "token": "t"}, "bad_request")

    def test_sync_limit_clamped(self) -> None:
        """A sync limit above 1000 is lowered to 1000."""
        d = codec.FrameDecoder()
        self.assertEqual(d.feed(framed({"type": "sync", "after": 0, "limit": 5000})),
                         [F.Sync(after=0, limit=1000)])

    def test_sync_limit_zero(self) -> None:
        """A sync limit below 1 is bad_request."""
        self.check({"type": "sync", "after": 0, "limit": 0}, "bad_request")

    def test_trailing_newline_refused(self) -> None:
        """A trailing newline does not pass the id or user name rules."""
        self.check({"type": "send", "id": "x\n", "to": "bob", "body": "hi"}, "bad_request",
                   "x\n")
        self.check({"type": "send", "id": "x", "to": "bob\n", "body": "hi"}, "bad_request",
                   "x")
        self.check({"type": "typing", "to": "bob\n"}, "bad_request")

    def test_integers_beyond_64_bits(self) -> None:
        """Integers above 2^63 - 1 in any client field are bad_request."""
        big = 2**63
        self.check({"type": "sync", "after": big}, "bad_request")
        self.check({"type": "sync", "after": 10**30}, "bad_request")
        self.check({"type": "sync", "after": 0, "limit": big}, "bad_request")
        self.check({"type": "ack", "seq": big}, "bad_request")
        self.check({"type": "read", "seq": big}, "bad_request")
        self.check({"type": "hello", "v": big, "token": "t"}, "bad_request")
        self.check({"type": "send", "id": "f", "to": "bob", "kind": "file",
                    "file": {"id": "a", "name": "n", "size": big, "mime": "m"}},
                   "bad_request", "f")

    def test_largest_integer_accepted(self) -> None:
        """2^63 - 1 is still a valid seq."""
        d = codec.FrameDecoder()
        self.assertEqual(d.feed(framed({"type": "sync", "after": 2**63 - 1})),
                         [F.Sync(after=2**63 - 1)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "send", "ack", "sync", "ping", "typing", "read", "x"])},
    optional={"id": st.text(max_size=70), "to": st.text(max_size=40), "seq": json_values,
              "body": json_values, "v": json_values, "token": json_values,
              "after": json_values, "limit": json_values, "group": json_values,
              "kind": json_values, "file": json_values})


class DecoderSharingTests(unittest.TestCase):
    """Decoders of the same frame types share their msgspec decoder and tag set."""

    def test_shared_per_frame_types(self) -> None:
        """Two client-frame decoders share one decoder; a server-frame decoder has its own."""
        a, b = codec.FrameDecoder(), codec.FrameDecoder(F.CLIENT_FRAME_TYPES)
        server = codec.FrameDecoder(F.SERVER_FRAME_TYPES)
        self.assertIs(a._decoder, b._decoder)
        self.assertIs(a._tags, b._tags)
        self.assertIsNot(a._decoder, server._decoder)
        self.assertIsNot(a._tags, server._tags)

    def test_shared_decoders_keep_their_types(self) -> None:
        """Each direction still accepts only its own frames, and buffers stay separate."""
        client = codec.FrameDecoder()
        server = codec.FrameDecoder(F.SERVER_FRAME_TYPES)
        [err] = server.feed(codec.encode(F.Ack(seq=1)))
        self.assertEqual(err.code, "unknown_type")
        self.assertEqual(client.feed(codec.encode(F.Ack(seq=1))[:3]), [])
        self.assertEqual(server.feed(codec.encode(F.Pong())), [F.Pong()])
        self.assertEqual(client.feed(codec.encode(F.Ack(seq=1))[3:]), [F.Ack(seq=1)])


class PropertyTests(unittest.TestCase):
    """Any input gives frames or one clear protocol error, never an exception."""

    def assertSane(self, data: bytes, chunk: int) -> None:
        d = codec.FrameDecoder(max_frame=4096)
        out = []
        for i in range(0, len(data), chunk):
            out.extend(d.feed(data[i:i + chunk]))
        fatal = [o for o in out if isinstance(o, errors.DimError) and o.fatal]
        self.assertLessEqual(len(fatal), 1)
        if fatal:
            self.assertIs(out[-1], fatal[0])
        for o in out:
            if isinstance(o, errors.DimError):
                self.assertIn(o.code, errors.BY_CODE)
            else:
                self.assertIsInstance(o, F.CLIENT_FRAME_TYPES)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.integers(min_value=1, max_value=50))
    def test_arbitrary_bytes(self, data: bytes, chunk: int) -> None:
        """Random bytes never raise and end in at most one fatal error."""
        self.assertSane(data, chunk)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(frame_like, json_values).map(framed)
                    | st.binary(max_size=40).map(raw), max_size=8),
           st.integers(min_value=1, max_value=50))
    def test_framed_garbage(self, parts: list[bytes], chunk: int) -> None:
        """Well-framed but arbitrary payloads give frames or contract errors."""
        self.assertSane(b"".join(parts), chunk)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([b'{"type":"', b'{"type":"send","id":"', b'{"type":"ack","seq":']),
           st.binary(max_size=30), st.sampled_from([b'"}', b'}', b'']))
    def test_broken_strings(self, head: bytes, middle: bytes, tail: bytes) -> None:
        """Invalid UTF-8 or JSON inside a frame's fields is a protocol error, not a crash."""
        self.assertSane(raw(head + middle + tail) + framed({"type": "ping"}), 7)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(frame_like, min_size=1, max_size=6))
    def test_each_frame_answered(self, objs: list[dict]) -> None:
        """Every well-framed JSON object gives exactly one frame or error."""
        d = codec.FrameDecoder()
        out = d.feed(b"".join(framed(o) for o in objs))
        self.assertEqual(len(out), len(objs))
