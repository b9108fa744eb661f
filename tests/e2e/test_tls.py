"""TLS end to end: ``twistd dim`` with ``ssl:`` gateway and node endpoints, certificates from a
CA made in the test, and the client core verifying them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import trustme
from twisted.internet import defer, reactor
from twisted.trial import unittest

from dim import errors
from dim.client.gateway import GatewayClient
from dim.client.session import ClientSession
from dim.client.events import Connected, Disconnected, MessageReceived
from dim.client.tls import https_agent, load_trust_root
from dim.launch import free_ports
from tests.harness import sleep, twistd

PASSWORD = "correct horse battery"


class TlsDim:
    """``twistd -n dim`` whose gateway and node listen with TLS, with a certificate for
    127.0.0.1 issued by a CA of its own (``ca_file`` holds the CA's certificate)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        key_file, cert_file = workdir / "server.key", workdir / "server.pem"
        cert.private_key_pem.write_to_path(str(key_file))
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        self.ca_file = workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.http_port, self.node_port = free_ports(2)
        tls = f"privateKey={key_file}:certKey={cert_file}:interface=127.0.0.1"
        self.process = twistd("dim", [
            "--gateway", f"ssl:{self.http_port}:{tls}", "--node", f"ssl:{self.node_port}:{tls}",
            "--data", str(workdir / "data")], workdir)
        self.process.ports = [self.http_port, self.node_port]
        self.base = f"https://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Start and wait until both ports accept connections."""
        self.process.launch()

    def gateway(self, ca_file: Path) -> GatewayClient:
        """A gateway client trusting only the CA in ``ca_file``."""
        agent = https_agent(reactor, load_trust_root(ca_file), persistent=False)
        return GatewayClient(self.base, request_options={"agent": agent, "timeout": 20})


class Watcher:
    """Collects a session's events; ``wait`` for one that matches."""

    def __init__(self, session: ClientSession) -> None:
        self.events: list[Any] = []
        session.subscribe(self.events.append)

    @defer.inlineCallbacks
    def wait(self, kind: type, timeout: float = 15.0):  # type: ignore[no-untyped-def]
        """The first event of ``kind``, waiting up to ``timeout`` seconds for it."""
        for _ in range(int(timeout / 0.05)):
            found = [e for e in self.events if isinstance(e, kind)]
            if found:
                return found[0]
            yield sleep(0.05)
        raise AssertionError(f"no {kind.__name__} within {timeout}s: {self.events}")


class TlsTests(unittest.TestCase):
    """The whole chain runs over verified TLS; a certificate from another CA is refused."""

    timeout = 90

    def setUp(self) -> None:
        self.dim = TlsDim(Path(self.mktemp()).resolve())
        self.dim.start()
        self.sessions: list[ClientSession] = []

    def tearDown(self) -> None:
        for session in self.sessions:
            session.stop()
        self.dim.process.kill()

    def session(self, user: str, token: str, trust_file: Path) -> ClientSession:
        """A client-core session verifying TLS nodes against the CA in ``trust_file``."""
        gateway = self.dim.gateway(trust_file)
        gateway.token = token
        session = ClientSession(gateway, reactor, user, token, device="tls-test",
                                trust_root=load_trust_root(trust_file))
        self.sessions.append(session)
        return session

    @defer.inlineCallbacks
    def test_whole_chain_over_tls(self):  # type: ignore[no-untyped-def]
        """register, login, route, hello, send and msg all pass over verified TLS."""
        gateway = self.dim.gateway(self.dim.ca_file)
        yield gateway.register("alice", PASSWORD)
        yield gateway.register("bob", PASSWORD)
        alice_login = yield gateway.login("alice", PASSWORD)
        self.assertEqual(alice_login["node"], {"id": "local", "host": "127.0.0.1",
                                               "port": self.dim.node_port, "tls": True})
        route = yield gateway.route()
        self.assertIs(route["node"]["tls"], True)
        bob_login = yield self.dim.gateway(self.dim.ca_file).login("bob", PASSWORD)

        alice = self.session("alice", alice_login["token"], self.dim.ca_file)
        bob = self.session("bob", bob_login["token"], self.dim.ca_file)
        alice_events, bob_events = Watcher(alice), Watcher(bob)
        alice.start(route["node"])
        bob.start()  # no node given: the session asks the gateway's route over HTTPS
        yield alice_events.wait(Connected)
        yield bob_events.wait(Connected)
        self.assertTrue(alice.node.tls)
        self.assertTrue(bob.node.tls)
        alice.send("bob", "over TLS")
        received = yield bob_events.wait(MessageReceived)
        self.assertEqual((received.entry.sender, received.entry.body), ("alice", "over TLS"))
        self.assertNotIn("Traceback", self.dim.process.log.read_text())

    @defer.inlineCallbacks
    def test_other_ca_refused(self):  # type: ignore[no-untyped-def]
        """A client trusting another CA refuses the gateway and the node: no welcome."""
        gateway = self.dim.gateway(self.dim.ca_file)
        yield gateway.register("carol", PASSWORD)
        login = yield gateway.login("carol", PASSWORD)

        other_file = Path(self.mktemp()).resolve()
        trustme.CA().cert_pem.write_to_path(str(other_file))
        with self.assertRaises(Exception) as caught:
            yield self.dim.gateway(other_file).login("carol", PASSWORD)
        self.assertNotIsInstance(caught.exception, errors.DimError)
        self.assertIn("certificate verify failed", repr(caught.exception))

        carol = self.session("carol", login["token"], other_file)
        events = Watcher(carol)
        carol.start(login["node"])
        lost = yield events.wait(Disconnected)
        self.assertIn("certificate verify failed", lost.reason)
        yield sleep(0.5)
        self.assertEqual([e for e in events.events if isinstance(e, Connected)], [])
