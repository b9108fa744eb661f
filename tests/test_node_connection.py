"""Tests of ClientConnection: framing, hello first, ping, and errors turned into frames."""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dim import errors
from dim.node import connection as connection_module
from dim.node.connection import ClientConnection, ConnectionFactory, ConnectionState
from dim.protocol import frames as F
from tests.fakes.node import FakeClient


class RecordingHandler:
    """A handler that welcomes every hello and records or scripts the rest."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.made: list[ClientConnection] = []
        self.lost: list[ClientConnection] = []
        self.result: Any = None
        self.hello_result: Any = None

    def connection_made(self, conn: ClientConnection) -> None:
        self.made.append(conn)

    def connection_lost(self, conn: ClientConnection) -> None:
        self.lost.append(conn)

    def on_hello(self, conn: ClientConnection, frame: F.Hello) -> Any:
        self.calls.append(("hello", frame))
        if self.hello_result is not None:
            return self.hello_result
        conn.welcome(F.Welcome(user="alice", node="n1", heartbeat=30, max_frame=65536,
                               last_seq=0))
        return None

    def on_send(self, conn: ClientConnection, frame: F.Send) -> Any:
        self.calls.append(("send", frame))
        result = self.result
        if callable(result):
            return result()
        return result

    def on_sync(self, conn: ClientConnection, frame: F.Sync) -> Any:
        self.calls.append(("sync", frame))
        return None


def _send(i: int = 1) -> F.Send:
    return F.Send(id=f"m{i}", to="bob", body="hi")


class ConnectionTests(SynchronousTestCase):
    """ClientConnection hands frames to its handler and reports errors as error frames."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.handler = RecordingHandler()
        self.client = FakeClient(self.handler, self.clock)

    def welcome(self) -> None:
        self.client.send(F.Hello(v=1, token="t-alice"))
        [welcome] = self.client.received()
        self.assertIsInstance(welcome, F.Welcome)

    def assertError(self, code: str, ref: str | None = None, closing: bool = False) -> F.Error:
        frames = self.client.received()
        self.assertEqual(len(frames), 1, frames)
        [err] = frames
        self.assertIsInstance(err, F.Error)
        self.assertEqual(err.code, code)
        self.assertEqual(err.ref, ref)
        self.assertEqual(self.client.closing, closing)
        return err

    def test_connection_made_and_lost(self) -> None:
        """The handler hears of the connection's start and (once) of its end."""
        self.assertEqual(self.handler.made, [self.client.conn])
        self.client.lose()
        self.client.lose()
        self.assertEqual(self.handler.lost, [self.client.conn])
        self.assertIs(self.client.conn.state, ConnectionState.CLOSED)

    def test_hello_then_frames_go_to_handler(self) -> None:
        """After welcome, frames reach on_<type> in order."""
        self.welcome()
        self.client.send(_send(1))
        self.client.send(F.Sync(after=0))
        self.assertEqual([c[0] for c in self.handler.calls], ["hello", "send", "sync"])
        self.assertTrue(self.client.conn.welcomed)

    def test_frame_before_hello(self) -> None:
        """A frame other than hello before welcome gets unauthorized and closes."""
        self.client.send(_send(1))
        self.assertError("unauthorized", closing=True)
        self.assertEqual(self.handler.calls, [])

    def test_unknown_type_before_hello(self) -> None:
        """An unknown frame type before welcome is unauthorized too, and closes."""
        self.client.send({"type": "dance", "id": "x"})
        self.assertError("unauthorized", closing=True)

    def test_broken_frame_before_hello(self) -> None:
        """A send with bad fields before welcome is unauthorized, and closes."""
        self.client.send({"type": "send", "id": "m1"})
        err = self.assertError("unauthorized", closing=True)
        self.assertIn("send", err.message)

    def test_broken_hello(self) -> None:
        """A hello without a token gets bad_request; the client may try again."""
        self.client.send({"type": "hello", "v": 1})
        self.assertError("bad_request")
        self.welcome()

    def test_ping_before_hello(self) -> None:
        """Even ping before welcome is unauthorized."""
        self.client.send(F.Ping())
        self.assertError("unauthorized", closing=True)

    def test_frame_while_authenticating(self) -> None:
        """A frame sent after hello but before welcome is unauthorized too."""
        self.handler.hello_result = Deferred()
        self.client.send(F.Hello(v=1, token="t-alice"))
        self.client.send(F.Sync(after=0))
        self.assertError("unauthorized", closing=True)

    def test_ping_pong(self) -> None:
        """ping is answered by pong without reaching the handler."""
        self.welcome()
        self.client.send(F.Ping())
        self.assertEqual(self.client.received(), [F.Pong()])
        self.assertEqual(len(self.handler.calls), 1)

    def test_hello_twice(self) -> None:
        """A second hello gets bad_request and the connection stays."""
        self.welcome()
        self.client.send(F.Hello(v=1, token="t-alice"))
        self.assertError("bad_request")

    def test_hello_twice_while_authenticating(self) -> None:
        """A second hello while the first is pending gets bad_request."""
        self.handler.hello_result = Deferred()
        self.client.send(F.Hello(v=1, token="t-alice"))
        self.client.send(F.Hello(v=1, token="t-alice"))
        self.assertError("bad_request")

    def test_bad_hello_version(self) -> None:
        """A hello with another protocol version gets bad_request."""
        self.client.send({"type": "hello", "v": 2, "token": "t"})
        self.assertError("bad_request")

    def test_hello_failing_unauthorized(self) -> None:
        """A handler refusing hello with Unauthorized closes the connection."""
        self.handler.hello_result = fail(errors.Unauthorized("invalid token"))
        self.client.send(F.Hello(v=1, token="nope"))
        err = self.assertError("unauthorized", closing=True)
        self.assertEqual(err.message, "invalid token")

    def test_hello_internal_failure_allows_retry(self) -> None:
        """A crashing hello gets internal; the client may say hello again."""
        self.handler.hello_result = fail(RuntimeError("db down"))
        self.client.send(F.Hello(v=1, token="t-alice"))
        self.assertError("internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.handler.hello_result = None
        self.welcome()

    def test_dim_error_raised(self) -> None:
        """A DimError raised by the handler becomes its error frame, with the frame's id."""
        self.welcome()

        def boom() -> None:
            raise errors.NotFound("no such user: bob")

        self.handler.result = boom
        self.client.send(_send(7))
        err = self.assertError("not_found", ref="m7")
        self.assertEqual(err.message, "no such user: bob")

    def test_dim_error_errbacked(self) -> None:
        """A DimError errbacked later becomes an error frame then."""
        self.welcome()
        d: Deferred[None] = Deferred()
        self.handler.result = d
        self.client.send(_send(3))
        self.assertEqual(self.client.received(), [])
        d.errback(errors.TooLarge("too big"))
        self.assertError("too_large", ref="m3")

    def test_fatal_dim_error_closes(self) -> None:
        """A fatal DimError from the handler closes the connection."""
        self.welcome()
        self.handler.result = lambda: fail(errors.Unauthorized("token revoked"))
        self.client.send(_send(1))
        self.assertError("unauthorized", ref="m1", closing=True)

    def test_other_exception_is_internal(self) -> None:
        """Any other exception becomes internal, is logged, and the connection stays."""
        self.welcome()

        def boom() -> None:
            raise ZeroDivisionError()

        self.handler.result = boom
        self.client.send(_send(1))
        self.assertError("internal", ref="m1")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.handler.result = None
        self.client.send(F.Ping())
        self.assertEqual(self.client.received(), [F.Pong()])

    def test_unknown_type(self) -> None:
        """An unknown frame type gets unknown_type; the connection stays."""
        self.welcome()
        self.client.send({"type": "dance", "id": "x1"})
        self.assertError("unknown_type", ref="x1")
        self.client.send(F.Ping())
        self.assertEqual(self.client.received(), [F.Pong()])

    def test_frame_type_without_handler_method(self) -> None:
        """A known frame type the handler does not take gets unknown_type."""
        self.welcome()
        self.client.send(F.Ack(seq=1))
        self.assertError("unknown_type")

    def test_bad_fields(self) -> None:
        """A frame with a missing or invalid field gets bad_request with its id."""
        self.welcome()
        self.client.send({"type": "send", "id": "m1", "to": "bob"})
        self.assertError("bad_request", ref="m1")
        self.client.send({"type": "send", "id": "m2", "to": "bad name!", "body": "x"})
        self.assertError("bad_request", ref="m2")
        self.client.send({"type": "ack", "seq": -1})
        self.assertError("bad_request")

    def test_body_too_large(self) -> None:
        """A body over 16 KiB gets too_large and the connection stays."""
        self.welcome()
        self.client.send(F.Send(id="big", to="bob", body="é" * 9000))
        self.assertError("too_large", ref="big")
        self.assertFalse(self.client.closing)

    def test_junk_closes(self) -> None:
        """Bytes that are not JSON get bad_frame and close the connection."""
        self.client.send(b"\x00\x00\x00\x03abc")
        self.assertError("bad_frame", closing=True)

    def test_oversize_frame_closes_only_that_connection(self) -> None:
        """A frame over max_frame closes its connection; another keeps working."""
        other = FakeClient(self.handler, self.clock)
        other.send(F.Hello(v=1, token="t-alice"))
        other.received()
        self.welcome()
        self.client.send(b"\x00\x01\x00\x01" + b"x" * 10)
        self.assertError("frame_too_large", closing=True)
        other.send(F.Ping())
        self.assertEqual(other.received(), [F.Pong()])
        self.assertFalse(other.closing)

    def test_small_max_frame(self) -> None:
        """The max_frame given at construction is enforced."""
        client = FakeClient(self.handler, self.clock, max_frame=100)
        client.send(F.Hello(v=1, token="t-" + "a" * 200))
        [err] = client.received()
        self.assertEqual(err.code, "frame_too_large")
        self.assertTrue(client.closing)

    def test_last_heard(self) -> None:
        """Any bytes received move last_heard to now."""
        self.assertEqual(self.client.conn.connected_at, 0)
        self.clock.advance(5)
        self.client.send(b"\x00\x00")
        self.assertEqual(self.client.conn.last_heard, 5)

    def test_byte_by_byte(self) -> None:
        """Frames split into single bytes are decoded all the same."""
        from dim.protocol import codec
        data = codec.encode(F.Hello(v=1, token="t-alice")) + codec.encode(F.Ping())
        for i in range(len(data)):
            self.client.send(data[i:i + 1])
        frames = self.client.received()
        self.assertEqual([type(f) for f in frames], [F.Welcome, F.Pong])

    def test_no_writes_after_close(self) -> None:
        """A result arriving after the connection closed writes nothing."""
        self.welcome()
        d: Deferred[None] = Deferred()
        self.handler.result = d
        self.client.send(_send(1))
        self.client.lose()
        d.errback(errors.NotFound("gone"))
        self.assertEqual(self.client.received(), [])

    def test_flood_pauses_reading(self) -> None:
        """Too many pending requests pause reading; it resumes once they settle."""
        self.patch(connection_module, "MAX_IN_FLIGHT", 4)
        self.patch(connection_module, "RESUME_IN_FLIGHT", 1)
        self.welcome()
        pending = [Deferred() for _ in range(4)]
        it = iter(pending)
        self.handler.result = lambda: next(it)
        for i in range(4):
            self.client.send(_send(i))
        self.assertEqual(self.client.transport.producerState, "paused")
        for d in pending[:3]:
            d.callback(None)
        self.assertEqual(self.client.transport.producerState, "producing")
        pending[3].callback(None)

    def test_unread_writes_pause_reading(self) -> None:
        """When the client reads nothing, the node stops reading it until it catches up."""
        self.welcome()
        producer = self.client.transport.producer
        self.assertIsNotNone(producer)
        self.clock.advance(3)
        producer.pauseProducing()
        self.assertEqual(self.client.transport.producerState, "paused")
        self.assertEqual(self.client.conn.write_congested_since, 3)
        producer.resumeProducing()
        self.assertEqual(self.client.transport.producerState, "producing")
        self.assertIsNone(self.client.conn.write_congested_since)

    def test_two_reasons_to_pause(self) -> None:
        """Reading resumes only when neither requests nor writes hold it back."""
        self.welcome()
        conn = self.client.conn
        conn.pause_reading("requests")
        conn.pause_reading("writes")
        conn.resume_reading("requests")
        self.assertEqual(self.client.transport.producerState, "paused")
        conn.resume_reading("writes")
        self.assertEqual(self.client.transport.producerState, "producing")

    def test_close_unregisters_producer(self) -> None:
        """Closing lets go of the producer, which would otherwise keep the socket open."""
        self.client.send(_send(1))
        self.assertTrue(self.client.closing)
        self.assertIsNone(self.client.transport.producer)
        self.assertEqual(self.client.conn.closing_since, 0)

    def test_factory(self) -> None:
        """The factory builds connections bound to its handler, clock and max_frame."""
        factory = ConnectionFactory(self.handler, self.clock, max_frame=1234)
        conn = factory.buildProtocol(None)
        self.assertIs(conn.handler, self.handler)
        self.assertIs(conn.clock, self.clock)
        self.assertEqual(conn.max_frame, 1234)


_TRANSPORT_SIZE_CHECK = """
import sys, tracemalloc
from twisted.internet import tcp
from twisted.internet.task import Clock
from dim.node.connection import _TRANSPORT_ATTRIBUTES, ConnectionFactory
if sys.argv[1] == "factory":
    ConnectionFactory(object(), Clock())
first, later = _TRANSPORT_ATTRIBUTES[:13], _TRANSPORT_ATTRIBUTES[13:]
def make():
    t = tcp.Server.__new__(tcp.Server)
    for name in first:
        setattr(t, name, None)
    return t
early = [make() for _ in range(200)]  # connections that never wrote, such as port probes
make().producer = None                # one that learnt one more name
late = [make() for _ in range(100)]
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
for t in late:
    for name in later:
        setattr(t, name, None)
print((tracemalloc.get_traced_memory()[0] - before) / len(late))
"""


class TransportSizeTests(SynchronousTestCase):
    """A node's TCP transports keep their attributes compact however the process began."""

    def bytes_per_transport(self, mode: str) -> float:
        """Bytes a transport allocates for its last attributes, in a fresh interpreter."""
        import subprocess
        import sys
        out = subprocess.run([sys.executable, "-c", _TRANSPORT_SIZE_CHECK, mode],
                             capture_output=True, text=True, check=True, timeout=60)
        return float(out.stdout.strip())

    def test_factory_teaches_transport_attributes(self) -> None:
        """After a ConnectionFactory is made, transports that register a producer and write
        allocate no dict of their own (about 830 bytes each otherwise, on CPython 3.11)."""
        self.assertLess(self.bytes_per_transport("factory"), 100)
