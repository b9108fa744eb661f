"""Tests of the client's TLS pieces: trust roots from PEM files, and nodes that say tls."""
from __future__ import annotations

from pathlib import Path

import trustme
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dim.client import session as session_module
from dim.client.events import NodeAddress
from dim.client.session import ClientSession
from dim.client.tls import load_trust_root


class TrustRootTests(SynchronousTestCase):
    """--ca FILE takes every certificate of a PEM file and refuses a file without one."""

    def test_bundle_of_two(self) -> None:
        """A PEM file with two CA certificates is a trust root."""
        path = Path(self.mktemp())
        path.write_bytes(trustme.CA().cert_pem.bytes() + trustme.CA().cert_pem.bytes())
        self.assertIsNotNone(load_trust_root(path))

    def test_no_certificate(self) -> None:
        """A file holding no PEM certificate (a key, say) is a ValueError."""
        path = Path(self.mktemp())
        path.write_bytes(trustme.CA().private_key_pem.bytes())
        with self.assertRaises(ValueError):
            load_trust_root(path)

    def test_missing_file(self) -> None:
        """A file that does not exist is an OSError."""
        with self.assertRaises(OSError):
            load_trust_root(Path(self.mktemp()))


class NodeAddressTests(SynchronousTestCase):
    """The gateway's node object says whether to speak TLS; only ``true`` means yes."""

    def test_tls_flag(self) -> None:
        """tls: true gives a TLS address; absent or anything else, plain TCP."""
        base = {"id": "n1", "host": "127.0.0.1", "port": 9000}
        self.assertTrue(NodeAddress.from_json({**base, "tls": True}).tls)
        self.assertFalse(NodeAddress.from_json(base).tls)
        self.assertFalse(NodeAddress.from_json({**base, "tls": "yes"}).tls)


class ConnectTests(SynchronousTestCase):
    """A session wraps the node's endpoint in TLS exactly when the node says tls."""

    def connect_to(self, tls: bool) -> list[tuple[object, str]]:
        """Connect a session to a node; the (endpoint, host) pairs wrapped in TLS."""
        class Endpoint:
            def connect(self, factory: object) -> Deferred[object]:
                return Deferred()

        wrapped: list[tuple[object, str]] = []

        def wrap(endpoint: object, host: str, root: object = None) -> object:
            wrapped.append((endpoint, host))
            return endpoint

        self.patch(session_module, "tls_endpoint", wrap)
        session = ClientSession(object(), Clock(), "alice", "token",  # type: ignore[arg-type]
                                endpoint_factory=lambda reactor, host, port: Endpoint())
        session._connect(NodeAddress("n1", "node.example", 9000, tls=tls))
        return wrapped

    def test_plain(self) -> None:
        """A node without tls is connected to as it is."""
        self.assertEqual(self.connect_to(False), [])

    def test_tls(self) -> None:
        """A node with tls gets its endpoint wrapped, verified for its host name."""
        [(_, host)] = self.connect_to(True)
        self.assertEqual(host, "node.example")
