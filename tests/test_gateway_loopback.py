"""The gateway's file calls over real TCP on the loopback: a 20 MiB upload streamed to disk
and downloaded back, resumed with Range, and refusals at the size limit."""
from __future__ import annotations

import hashlib
import json
import os
import time
import tracemalloc
from typing import Any

import treq
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from dim.cluster.interface import NodeInfo
from dim.cluster.local import LocalNodeRegistry, LocalSessionRegistry
from dim.files import FileStorage, Upload
from dim.gateway.app import Gateway
from dim.store.memory import MemoryStore
from dim.tokens import TokenAuthority
from tests.fakes.tokens import SECRET, fast_hasher

MIB = 1024 * 1024


class RawClient(protocol.Protocol):
    """Sends bytes and collects everything the server answers until it closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(self.received)


class LoopbackTests(TestCase):
    """A gateway.site() listening on 127.0.0.1, called with treq and raw sockets."""

    max_file_size = 20 * MIB

    def setUp(self) -> None:
        self.store = MemoryStore()
        tokens = TokenAuthority(SECRET, self.store, ttl=3600, clock=reactor)
        passwords, _ = fast_hasher()
        self.files = FileStorage(self.mktemp())
        self.gateway = Gateway(self.store, tokens, passwords,
                               LocalNodeRegistry([NodeInfo(id="n", host="127.0.0.1",
                                                           port=1)]),
                               LocalSessionRegistry(), clock=reactor, files=self.files,
                               max_file_size=self.max_file_size)
        self.site = self.gateway.site()
        self.requests: list[Any] = []
        factory = self.site.requestFactory

        def recording(channel: Any, *queued: Any) -> Any:
            request = factory(channel)
            self.requests.append(request)
            return request

        self.site.requestFactory = recording
        self.connections: list[defer.Deferred[None]] = []
        build = self.site.buildProtocol

        def tracked(addr: Any) -> Any:
            channel = build(addr)
            closed: defer.Deferred[None] = defer.Deferred()
            lost = channel.connectionLost

            def connection_lost(reason: Any) -> None:
                lost(reason)
                closed.callback(None)

            channel.connectionLost = connection_lost
            self.connections.append(closed)
            return channel

        self.site.buildProtocol = tracked
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(lambda: defer.gatherResults(self.connections))
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    async def login(self) -> str:
        """Register and log in alice; her token."""
        body = {"user": "alice", "password": "password1"}
        await treq.post(self.base + "/v1/register", json=body, pool=self.pool)
        answer = await treq.post(self.base + "/v1/login", json=body, pool=self.pool)
        return (await answer.json())["token"]

    async def test_20_mib_round_trip(self) -> None:
        """A 20 MiB upload is streamed to disk (never into request.content, never held in
        memory), downloaded back with the same sha256, and resumed with Range."""
        token = await self.login()
        auth = {"Authorization": f"Bearer {token}"}
        data = os.urandom(20 * MIB)
        digest = hashlib.sha256(data).hexdigest()
        chunks: list[int] = []
        write = Upload.write
        self.patch(Upload, "write", lambda upload, chunk: (chunks.append(len(chunk)),
                                                           write(upload, chunk))[1])
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            started = time.monotonic()
            answer = await treq.post(self.base + "/v1/files?name=big.bin", data=data,
                                     headers={**auth, "Content-Type":
                                              "application/octet-stream"}, pool=self.pool)
            body = await answer.json()
            upload_seconds = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        self.assertEqual(answer.code, 201, body)
        self.assertEqual((body["file"]["size"], body["file"]["sha256"]), (len(data), digest))
        upload_request = self.requests[-1]
        self.assertTrue(upload_request.streamed)
        self.assertEqual(sum(chunks), len(data))
        self.assertLess(max(chunks), MIB)
        # The client's own buffers and chunks are in the peak too; a buffered body is 20 MiB.
        self.assertLess(peak, 6 * MIB, f"peak traced allocation {peak / MIB:.1f} MiB")
        print(f"\n20 MiB upload: {upload_seconds:.2f} s, {len(chunks)} chunks written, "
              f"largest {max(chunks)} bytes, peak Python allocation {peak / MIB:.2f} MiB")

        file_id = body["file"]["id"]
        answer = await treq.get(f"{self.base}/v1/files/{file_id}", headers=auth,
                                pool=self.pool)
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.length, len(data))
        content = await answer.content()
        self.assertEqual(hashlib.sha256(content).hexdigest(), digest)
        self.assertEqual(answer.headers.getRawHeaders(b"content-disposition"),
                         [b"attachment; filename*=UTF-8''big.bin"])

        half = len(data) // 2
        answer = await treq.get(f"{self.base}/v1/files/{file_id}",
                                headers={**auth, "Range": f"bytes={half}-"}, pool=self.pool)
        self.assertEqual(answer.code, 206)
        rest = await answer.content()
        self.assertEqual(hashlib.sha256(data[:half] + rest).hexdigest(), digest)

    async def test_over_limit_with_treq(self) -> None:
        """One byte over 20 MiB: the client gets 413 too_large, and nothing is stored."""
        token = await self.login()
        answer = await treq.post(self.base + "/v1/files?name=big.bin",
                                 data=b"x" * (20 * MIB + 1),
                                 headers={"Authorization": f"Bearer {token}"}, pool=self.pool)
        self.assertEqual(answer.code, 413)
        self.assertEqual((await answer.json())["error"]["code"], "too_large")
        self.assertEqual(os.listdir(self.files.directory), [])
        started = time.monotonic()
        await self.connections[-1]
        print(f"\nserver side of the refused upload closed after "
              f"{time.monotonic() - started:.2f} s")

    async def test_over_limit_answered_before_body(self) -> None:
        """A client announcing 1 GiB with Expect: 100-continue gets 413 without sending a
        byte of body, and the connection then closes."""
        token = await self.login()
        request = ("POST /v1/files?name=huge HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {token}\r\nContent-Length: {1024 * MIB}\r\n"
                   "Expect: 100-continue\r\n\r\n").encode()
        client = RawClient(request)
        started = time.monotonic()
        await protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", self.port.getHost().port)
        received = await client.closed
        head, _, body = received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), received)
        self.assertNotIn(b"100 Continue", received)
        self.assertEqual(json.loads(body)["error"]["code"], "too_large")
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(os.listdir(self.files.directory), [])
