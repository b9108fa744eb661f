"""The load generator worker: one process holding a share of the clients of a scenario.

Run as ``python -m dim.bench.loadgen``.  The orchestrator writes one JSON command per line on
the worker's stdin and reads one JSON answer per command from its stdout.  Every connection
of a worker is bound to the worker's own 127.0.0.x source address, so several workers
together hold more sockets than one process may open.

The clients are lean: :class:`FrameClient` speaks the contract with
:class:`dim.protocol.codec.FrameDecoder` and :func:`dim.protocol.codec.encode` and nothing
else (no retransmission, no reconnects), so the generator stays cheaper than the server it
measures.  The echo flood counts echoed frames by bytes (every frame has the same size), and
the HTTP load uses a small keep-alive HTTP/1.1 client.

Commands (``cmd`` field): ``hold``, ``stats``, ``close``, ``flood``, ``chat_setup``,
``chat_step``, ``http``, ``redis_users``, ``fill_inbox``, ``search_scanned``,
``redis_delete``, ``sender_setup``, ``sender_run``, ``storm_setup``, ``storm_status``,
``storm_stop``, ``quit``.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import json
import sys
import time
from typing import Any, cast
from collections.abc import Callable

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from dim import errors
from dim.bench.schedule import OpenLoopSchedule
from dim.protocol import codec
from dim.protocol import frames as F
from dim.protocol.wire import IStreamTransport

_PING = codec.encode(F.Ping())
#: Body of every benchmark chat message (a short line of chat).
CHAT_BODY = "the quick brown fox jumps over the lazy dog"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class FrameClient(protocol.Protocol):
    """A lean contract client: decodes node frames and hands them to its owner."""

    #: Set by makeConnection before any other method runs.
    transport: IStreamTransport

    def __init__(self, owner: Any, max_frame: int = 1 << 20) -> None:
        self.owner = owner
        self.decoder = codec.FrameDecoder(F.SERVER_FRAME_TYPES, max_frame)
        self.welcomed: defer.Deferred[F.Welcome] = defer.Deferred()
        self.welcome: F.Welcome | None = None
        self.open = False
        self.last_write = 0.0
        self.ping_at: float | None = None
        self.user = ""
        self.max_seq = 0
        self.acked = 0

    def connectionMade(self) -> None:
        self.open = True
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            nodelay(True)

    def write(self, data: bytes, now: float) -> None:
        """Write bytes and remember when (for the heartbeat)."""
        self.transport.write(data)
        self.last_write = now

    def hello(self, token: str, device: str | None, now: float) -> defer.Deferred[F.Welcome]:
        """Send ``hello``; the Deferred fires with the ``welcome``."""
        self.write(codec.encode(F.Hello(v=1, token=token, device=device)), now)
        return self.welcomed

    def dataReceived(self, data: bytes) -> None:
        owner = self.owner
        for item in self.decoder.feed(data):
            if isinstance(item, errors.DimError):
                owner.on_error(self, item.code)
                continue
            t = type(item)
            if t is F.Welcome and self.welcome is None:
                self.welcome = cast(F.Welcome, item)
                self.welcomed.callback(self.welcome)
            elif t is F.Error and self.welcome is None and not self.welcomed.called:
                error = cast(F.Error, item)
                self.welcomed.errback(Failure(RuntimeError(f"{error.code}: {error.message}")))
            else:
                owner.on_frame(self, item)
        owner.on_batch(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.open = False
        if not self.welcomed.called:
            self.welcomed.errback(Failure(RuntimeError("connection lost before welcome")))
        self.owner.on_lost(self, reason)


class _FloodClient(protocol.Protocol):
    """Keeps ``window`` fixed-size frames in flight on an echo and counts them by bytes."""

    #: Set by makeConnection before any other method runs.
    transport: IStreamTransport

    def __init__(self, owner: Worker, frame: bytes, window: int) -> None:
        self.owner, self.frame, self.window = owner, frame, window
        self.received = 0
        self.counted = 0

    def connectionMade(self) -> None:
        self.transport.write(self.frame * self.window)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        done = self.received // len(self.frame) - self.counted
        if done:
            self.counted += done
            self.owner.flood_frames += done
            if self.owner.flooding:
                self.transport.write(self.frame * done)


class _HttpClient(protocol.Protocol):
    """A keep-alive HTTP/1.1 client with one request in flight, sent again on every answer."""

    #: Set by makeConnection before any other method runs.
    transport: IStreamTransport

    def __init__(self, owner: Worker, request: bytes) -> None:
        self.owner, self.request = owner, request
        self.buf = b""
        self.sent_at = 0.0
        self.need: int | None = None
        self.status = 0

    def connectionMade(self) -> None:
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while self._answer():
            self.owner.http_answer(self, self.status, time.perf_counter() - self.sent_at)
            if not self.owner.http_running:
                self.transport.loseConnection()
                return
            self.send()

    def _answer(self) -> bool:
        """Consume one whole answer from the buffer (Content-Length or chunked)."""
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            lines = head.split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            length, chunked = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            self.need = -1 if chunked else length
        if self.need >= 0:
            if len(self.buf) < self.need:
                return False
            self.buf = self.buf[self.need:]
            self.need = None
            return True
        pos = 0
        while True:  # chunked: size line, data, CRLF ... a zero size line, then a blank line
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size = int(self.buf[pos:eol].split(b";")[0], 16)
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", eol - 2 if eol >= 2 else 0)
                if self.buf[eol + 2:eol + 4] == b"\r\n":
                    self.buf = self.buf[eol + 4:]
                elif trailer_end >= 0:
                    self.buf = self.buf[trailer_end + 4:]
                else:
                    return False
                self.need = None
                return True
            if len(self.buf) < eol + 2 + size + 2:
                return False
            pos = eol + 2 + size + 2

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.owner.http_lost(self)


class _StormRecord:
    """What one client-core session of a reconnect storm went through."""

    def __init__(self, session: Any, clock: Any) -> None:
        self.session = session
        self.clock = clock
        self.lost_at: float | None = None
        self.back_at: float | None = None
        self.attempts = 0
        self.seen: set[int] = set()
        self.mids: list[str] = []
        self.duplicates = 0

    def event(self, event: Any) -> None:
        """Listen to the session's events."""
        from dim.client import events as E
        t = type(event)
        if t is E.MessageReceived:
            seq = event.entry.seq
            if seq in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(seq)
                self.mids.append(event.entry.mid)
        elif t is E.Disconnected:
            if self.lost_at is None or (self.back_at is not None and self.back_at >= self.lost_at):
                self.lost_at = self.clock.seconds()
                self.back_at = None
        elif t is E.Connected:
            if self.lost_at is not None:
                self.back_at = self.clock.seconds()
        elif t is E.Reconnecting:
            self.attempts += 1


class _Factory(protocol.Factory):
    def __init__(self, build: Callable[[], protocol.Protocol]) -> None:
        self.build = build

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self.build()


class Worker:
    """A worker's clients and what they measured; ``handle`` runs one command."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.conns: list[FrameClient] = []
        self.lost = 0
        self.lost_reasons: dict[str, int] = {}
        self.error_codes: dict[str, int] = {}
        # heartbeat
        self.heartbeat: float | None = None
        #: (due time, tie-breaker, connection): the next ping of every held connection.
        self.ping_queue: list[tuple[float, int, FrameClient]] = []
        self._tie = itertools.count()
        self.ping_loop: task.LoopingCall | None = None
        self.rtt: list[float] = []
        self.lateness: list[float] = []
        self.pings = 0
        self.pongs = 0
        # flood
        self.flood_frames = 0
        self.flooding = False
        # chat
        self.pairs: list[tuple[FrameClient, FrameClient]] = []
        self.pending: dict[str, list[float]] = {}
        self.to_msg: list[float] = []
        self.to_sent: list[float] = []
        self.to_delivered: list[float] = []
        self.msg_times: list[float] = []
        self.delivered_times: list[float] = []
        self.counter = 0
        # reconnect storm
        self.sender: FrameClient | None = None
        self.sender_ids: dict[str, str] = {}
        self.sender_sent: list[list[str]] = []
        self.storm: list[Any] = []
        # http
        self.http_running = False
        self.http_ok = 0
        self.http_fail = 0
        self.http_lat: list[float] = []
        self.http_statuses: dict[str, int] = {}
        self.http_conns: list[_HttpClient] = []

    # ---------------------------------------------------------------- callbacks of clients

    def on_error(self, conn: FrameClient, code: str) -> None:
        """Count a frame the decoder rejected or an error frame."""
        self.error_codes[code] = self.error_codes.get(code, 0) + 1

    def on_lost(self, conn: FrameClient, reason: Failure | None) -> None:
        """Count a connection that ended (unless the worker closed it)."""
        if not getattr(conn, "closing", False):
            self.lost += 1
            why = reason.getErrorMessage()[:80] if reason is not None else "?"
            self.lost_reasons[why] = self.lost_reasons.get(why, 0) + 1

    def on_frame(self, conn: FrameClient, frame: Any) -> None:
        """Handle one frame after welcome (dispatched on its exact type, so typed Any)."""
        t = type(frame)
        now = self.reactor.seconds()
        if t is F.Msg:
            if frame.seq > conn.max_seq:
                conn.max_seq = frame.seq
            entry = self.pending.get(frame.id)
            if entry is not None and entry[1] == 0.0:
                entry[1] = now
                self.to_msg.append(now - entry[0])
                self.msg_times.append(now)
        elif t is F.Sent:
            entry = self.pending.get(frame.id)
            if entry is not None:
                self.to_sent.append(now - entry[0])
            target = self.sender_ids.pop(frame.id, None)
            if target is not None:
                self.sender_sent.append([target, frame.mid])
        elif t is F.Delivered:
            entry = self.pending.pop(frame.id, None)
            if entry is not None:
                self.to_delivered.append(now - entry[0])
                self.delivered_times.append(now)
        elif t is F.Pong:
            if conn.ping_at is not None:
                self.rtt.append(now - conn.ping_at)
                conn.ping_at = None
                self.pongs += 1
        elif t is F.Error:
            self.on_error(conn, frame.code)

    def on_batch(self, conn: FrameClient) -> None:
        """After a read: acknowledge everything received so far, once (cumulative ack)."""
        if conn.max_seq > conn.acked and conn.open:
            conn.acked = conn.max_seq
            conn.write(codec.encode(F.Ack(seq=conn.max_seq)), self.reactor.seconds())

    def http_answer(self, client: _HttpClient, status: int, latency: float) -> None:
        """Count one HTTP answer."""
        if 200 <= status < 300:
            self.http_ok += 1
            self.http_lat.append(latency)
        else:
            self.http_fail += 1
        key = str(status)
        self.http_statuses[key] = self.http_statuses.get(key, 0) + 1

    def http_lost(self, client: _HttpClient) -> None:
        """Forget a closed HTTP connection."""
        if client in self.http_conns:
            self.http_conns.remove(client)

    # ---------------------------------------------------------------- commands

    def handle(self, cmd: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """Run one command; fires with its answer."""
        name = cmd.get("cmd")
        method = getattr(self, "cmd_" + str(name), None)
        if method is None:
            return defer.succeed({"ok": False, "error": f"unknown command {name!r}"})
        return defer.maybeDeferred(method, **{k: v for k, v in cmd.items() if k != "cmd"})

    def _connect(self, host: str, port: int, source: str | None,
                 build: Callable[[], protocol.Protocol]) -> defer.Deferred[Any]:
        ep = TCP4ClientEndpoint(self.reactor, host, port, timeout=30,
                                bindAddress=(source, 0) if source else None)
        return ep.connect(_Factory(build))

    @defer.inlineCallbacks
    def _open(self, host: str, port: int, source: str | None, tokens: list[str] | None,
              device: str | None, n: int, concurrency: int) -> Any:
        """Open ``n`` connections (saying hello with ``tokens`` round robin, if given)."""
        sem = defer.DeferredSemaphore(max(1, concurrency))
        failures: dict[str, int] = {}
        opened: list[FrameClient] = []

        @defer.inlineCallbacks
        def one(i: int) -> Any:
            try:
                conn = yield self._connect(host, port, source, lambda: FrameClient(self))
                conn.user = "?"
                if tokens:
                    yield conn.hello(tokens[i % len(tokens)],
                                     f"{device}-{i}" if device else None,
                                     self.reactor.seconds()).addTimeout(30, self.reactor)
                opened.append(conn)
            except Exception as e:
                key = f"{type(e).__name__}: {e}"[:100]
                failures[key] = failures.get(key, 0) + 1

        yield defer.gatherResults([sem.run(one, i) for i in range(n)])
        return opened, failures

    @defer.inlineCallbacks
    def cmd_hold(self, host: str, port: int, n: int, source: str | None = None,
                 tokens: list[str] | None = None, device: str | None = None,
                 heartbeat: float | None = None, concurrency: int = 200) -> Any:
        """Open ``n`` more idle connections and keep them; ping every ``heartbeat`` s idle."""
        t0 = time.perf_counter()
        opened, failures = yield self._open(host, port, source, tokens, device, n, concurrency)
        self.conns.extend(opened)
        if heartbeat:
            self.heartbeat = float(heartbeat)
            for conn in opened:
                self.schedule_ping(conn)
            if self.ping_loop is None:
                self.ping_loop = task.LoopingCall(self._ping_due)
                self.ping_loop.clock = self.reactor
                self.ping_loop.start(0.1, now=False)
        return {"ok": True, "opened": len(opened), "held": self.open_count(),
                "failed": sum(failures.values()), "failures": failures,
                "seconds": round(time.perf_counter() - t0, 3)}

    def open_count(self) -> int:
        """How many of the held connections are open."""
        return sum(1 for c in self.conns if c.open)

    def schedule_ping(self, conn: FrameClient) -> None:
        """Queue ``conn``'s next ping, H seconds after it last wrote."""
        heapq.heappush(self.ping_queue,
                       (conn.last_write + (self.heartbeat or 0.0), next(self._tie), conn))

    def _ping_due(self) -> None:
        now = self.reactor.seconds()
        h = self.heartbeat or 0.0
        q = self.ping_queue
        while q and q[0][0] <= now:
            due, _, conn = heapq.heappop(q)
            if not conn.open:
                continue
            if conn.last_write + h > now:  # it wrote something since: not idle yet
                self.schedule_ping(conn)
                continue
            self.lateness.append(now - due)
            conn.ping_at = now
            conn.write(_PING, now)
            self.pings += 1
            self.schedule_ping(conn)

    def cmd_stats(self, reset: bool = True) -> dict[str, Any]:
        """What the held connections saw since the last reset: pong round trips, losses."""
        out = {"ok": True, "held": self.open_count(), "lost": self.lost,
               "lost_reasons": self.lost_reasons, "errors": self.error_codes,
               "pings": self.pings, "pongs": self.pongs,
               "rtt_ms": [_ms(x) for x in self.rtt],
               "ping_lateness_ms": [_ms(x) for x in self.lateness]}
        if reset:
            self.rtt, self.lateness = [], []
            self.pings = self.pongs = 0
        return out

    @defer.inlineCallbacks
    def cmd_close(self, timeout: float = 10.0) -> Any:
        """Close every held connection and wait (up to ``timeout``) until they are gone."""
        if self.ping_loop is not None and self.ping_loop.running:
            self.ping_loop.stop()
        self.ping_loop = None
        self.ping_queue.clear()
        for c in self.conns:
            c.closing = True  # type: ignore[attr-defined]
            if c.open:
                c.transport.loseConnection()
        deadline = time.monotonic() + timeout
        while self.open_count() and time.monotonic() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        left = self.open_count()
        for c in self.conns:
            if c.open:
                c.transport.abortConnection()
        self.conns = []
        self.pairs = []
        self.pending = {}
        self.lost = 0
        self.lost_reasons = {}
        self.error_codes = {}
        return {"ok": True, "left_open": left}

    @defer.inlineCallbacks
    def cmd_flood(self, host: str, port: int, conns: int, seconds: float, warmup: float = 1.0,
                  window: int = 64, source: str | None = None) -> Any:
        """Pipelined echo load: ``conns`` connections, ``window`` frames in flight each."""
        frame = codec.encode(F.Send(id="flood-000001", to="bob", body=CHAT_BODY))
        self.flood_frames = 0
        self.flooding = True
        clients = yield defer.gatherResults([
            self._connect(host, port, source, lambda: _FloodClient(self, frame, window))
            for _ in range(conns)])
        yield task.deferLater(self.reactor, warmup, lambda: None)
        n0, t0 = self.flood_frames, time.perf_counter()
        yield task.deferLater(self.reactor, seconds, lambda: None)
        n1, t1 = self.flood_frames, time.perf_counter()
        self.flooding = False
        for c in clients:
            c.transport.loseConnection()
        return {"ok": True, "frames": n1 - n0, "seconds": round(t1 - t0, 4),
                "frame_bytes": len(frame)}

    @defer.inlineCallbacks
    def cmd_chat_setup(self, host: str, port: int, pairs: list[list[str]],
                       source: str | None = None, port_b: int | None = None) -> Any:
        """Connect and authenticate both sides of every pair [user_a, token_a, user_b, token_b]
        (the b side to ``port_b`` when given: another node)."""
        made = []
        for user_a, token_a, user_b, token_b in pairs:
            a, b = yield defer.gatherResults([
                self._open_one(host, port, source, token_a, user_a),
                self._open_one(host, port_b or port, source, token_b, user_b)])
            made.append((a, b))
        self.pairs = made
        self.conns.extend(c for p in made for c in p)
        return {"ok": True, "pairs": len(made)}

    @defer.inlineCallbacks
    def _open_one(self, host: str, port: int, source: str | None, token: str,
                  user: str) -> Any:
        conn = yield self._connect(host, port, source, lambda: FrameClient(self))
        conn.user = user
        welcome = yield conn.hello(token, "bench", self.reactor.seconds()).addTimeout(
            30, self.reactor)
        conn.max_seq = conn.acked = welcome.last_seq
        return conn

    @defer.inlineCallbacks
    def cmd_chat_step(self, rate: float, seconds: float, drain: float = 5.0,
                      start_in: float = 0.2, tick: float = 0.001) -> Any:
        """One open-loop step: ``rate`` sends per second over this worker's pairs."""
        self.pending = {}
        self.to_msg, self.to_sent, self.to_delivered = [], [], []
        self.msg_times, self.delivered_times = [], []
        self.error_codes = {}
        start = self.reactor.seconds() + start_in
        sched = OpenLoopSchedule(rate, start, seconds)
        pairs = self.pairs
        npairs = len(pairs)
        sent = 0
        done: defer.Deferred[None] = defer.Deferred()
        encode = codec.encode
        Send = F.Send

        def send_due() -> None:
            nonlocal sent
            now = self.reactor.seconds()
            for intended in sched.due(now):
                a, b = pairs[sent % npairs]
                self.counter += 1
                mid = f"b{self.counter}"
                self.pending[mid] = [intended, 0.0]
                if a.open:
                    a.write(encode(Send(id=mid, to=b.user, body=CHAT_BODY)), now)
                sent += 1
            if sched.finished:
                loop.stop()

        loop = task.LoopingCall(send_due)
        loop.clock = self.reactor
        yield task.deferLater(self.reactor, start_in, lambda: None)
        yield loop.start(tick, now=True)
        deadline = self.reactor.seconds() + drain
        while self.pending and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        del done
        end = sched.end
        in_window = sum(1 for t in self.delivered_times if t <= end)
        msgs_in_window = sum(1 for t in self.msg_times if t <= end)
        last = max(self.delivered_times) if self.delivered_times else end
        return {"ok": True, "offered_per_s": rate, "seconds": seconds, "sent": sent,
                "start": sched.start, "last_delivered": last,
                "msgs": len(self.to_msg), "delivered": len(self.to_delivered),
                "incomplete": len(self.pending),
                "delivered_in_window": in_window, "msgs_in_window": msgs_in_window,
                "drain_s": round(max(0.0, last - end), 3),
                "errors": self.error_codes, "lost": self.lost,
                "send_to_msg_ms": [_ms(x) for x in self.to_msg],
                "send_to_sent_ms": [_ms(x) for x in self.to_sent],
                "send_to_delivered_ms": [_ms(x) for x in self.to_delivered]}

    @defer.inlineCallbacks
    def cmd_http(self, host: str, port: int, requests: list[str], conns: int, seconds: float,
                 warmup: float = 0.0, source: str | None = None) -> Any:
        """Keep-alive HTTP load: ``conns`` connections, each repeating one of ``requests``."""
        self.http_ok = self.http_fail = 0
        self.http_lat, self.http_statuses = [], {}
        self.http_running = True
        reqs = [r.encode("latin-1") for r in requests]
        clients = yield defer.gatherResults([
            self._connect(host, port, source, functools.partial(_HttpClient, self,
                                                            reqs[i % len(reqs)]))
            for i in range(conns)])
        self.http_conns = list(clients)
        if warmup:
            yield task.deferLater(self.reactor, warmup, lambda: None)
        ok0, fail0, t0 = self.http_ok, self.http_fail, time.perf_counter()
        self.http_lat = []
        yield task.deferLater(self.reactor, seconds, lambda: None)
        ok1, fail1, t1 = self.http_ok, self.http_fail, time.perf_counter()
        self.http_running = False
        lat = [_ms(x) for x in self.http_lat]
        deadline = time.monotonic() + 30
        while self.http_conns and time.monotonic() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        for c in self.http_conns:
            c.transport.abortConnection()
        return {"ok": True, "ok_answers": ok1 - ok0, "failed_answers": fail1 - fail0,
                "seconds": round(t1 - t0, 4), "statuses": self.http_statuses,
                "latency_ms": lat}

    @defer.inlineCallbacks
    def cmd_redis_users(self, url: str, prefix: str, users: list[str],
                        password_hash: str) -> Any:
        """Create users straight in a cluster's Redis store (one shared password hash), so a
        big scenario needs no Argon2 hash per user; existing users are left alone."""
        from dim.errors import Conflict
        from dim.store.redis import RedisStore
        store = yield RedisStore.connect(url, prefix, clock=self.reactor)
        made = 0
        now = int(time.time() * 1000)
        sem = defer.DeferredSemaphore(64)

        @defer.inlineCallbacks
        def one(user: str) -> Any:
            nonlocal made
            try:
                yield store.create_user(user, password_hash, now)
                made += 1
            except Conflict:
                pass
        yield defer.gatherResults([sem.run(one, u) for u in users])
        yield store.close()
        return {"ok": True, "created": made}

    def _open_store(self, kind: str, target: str, prefix: str) -> Any:
        """A started store: SQLite at the path ``target`` or Redis at the URL ``target``."""
        if kind == "sqlite":
            from dim.store.sqlite import SQLiteStore
            return defer.succeed(SQLiteStore(target, reactor=self.reactor))
        from dim.store.redis import RedisStore
        return RedisStore.connect(target, prefix, clock=self.reactor)

    @defer.inlineCallbacks
    def cmd_fill_inbox(self, kind: str, target: str, entries: int, password_hash: str,
                       prefix: str = "", batch: int = 500) -> Any:
        """Fill the big inbox of :mod:`dim.bench.inbox` through the store's API: SQLite
        (``kind`` "sqlite", ``target`` the file) or Redis (``target`` the URL)."""
        from dim.bench import inbox
        store = yield self._open_store(kind, target, prefix)
        t0 = time.perf_counter()
        try:
            done = yield defer.Deferred.fromCoroutine(
                inbox.fill(store, entries, password_hash, batch))
        finally:
            yield store.close()
        return {"ok": True, **done, "fill_s": round(time.perf_counter() - t0, 2)}

    @defer.inlineCallbacks
    def cmd_search_scanned(self, url: str, prefix: str, user: str, queries: list[str],
                           limit: int) -> Any:
        """How many inbox entries the Redis store reads for each search of ``queries`` over
        the whole inbox, at most ``limit`` found (as the gateway asks)."""
        store = yield self._open_store("redis", url, prefix)
        scanned: dict[str, int] = {}
        try:
            for q in queries:
                before = store.search_scanned
                yield store.search_messages(user, q, None, limit)
                scanned[q] = store.search_scanned - before
        finally:
            yield store.close()
        return {"ok": True, "scanned": scanned}

    @defer.inlineCallbacks
    def cmd_redis_delete(self, url: str, prefix: str) -> Any:
        """Delete every key under ``prefix`` (a scenario's data, once measured)."""
        from dim.bench.redis_store import delete_prefix
        store = yield self._open_store("redis", url, prefix)
        try:
            deleted = yield defer.Deferred.fromCoroutine(delete_prefix(store.redis, prefix))
        finally:
            yield store.close()
        return {"ok": True, "deleted": deleted}

    @defer.inlineCallbacks
    def cmd_sender_setup(self, host: str, port: int, user: str, token: str,
                         source: str | None = None) -> Any:
        """Connect the one lean client that sends during a reconnect storm."""
        self.sender = yield self._open_one(host, port, source, token, user)
        self.conns.append(self.sender)
        return {"ok": True}

    @defer.inlineCallbacks
    def cmd_sender_run(self, targets: list[str], rate: float, seconds: float) -> Any:
        """Send ``rate`` messages per second for ``seconds`` to ``targets`` round robin;
        answers the (recipient, mid) of every message that got ``sent``."""
        self.sender_ids, self.sender_sent = {}, []
        sched = OpenLoopSchedule(rate, self.reactor.seconds(), seconds)
        sender = self.sender
        assert sender is not None
        k = 0

        def tick() -> None:
            nonlocal k
            now = self.reactor.seconds()
            for _ in sched.due(now):
                to = targets[k % len(targets)]
                k += 1
                mid = f"s{k}"
                self.sender_ids[mid] = to
                if sender.open:
                    sender.write(codec.encode(F.Send(id=mid, to=to, body=CHAT_BODY)), now)
            if sched.finished:
                loop.stop()

        loop = task.LoopingCall(tick)
        loop.clock = self.reactor
        yield loop.start(0.005, now=True)
        deadline = self.reactor.seconds() + 20
        while self.sender_ids and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        return {"ok": True, "attempted": k, "sent": self.sender_sent,
                "unconfirmed": len(self.sender_ids), "errors": self.error_codes}

    @defer.inlineCallbacks
    def cmd_storm_setup(self, base: str, users: list[list[str]], node: dict[str, Any],
                        source: str | None = None, timeout: float = 300.0,
                        batch: int = 100) -> Any:
        """Start a client-core session (:class:`dim.client.session.ClientSession`) for every
        [user, token] on ``node``, ``batch`` at a time (each batch connected before the next
        starts); answers once all are connected (or at ``timeout``)."""
        from dim.client.gateway import GatewayClient
        from dim.client.session import ClientSession

        def endpoint(reactor: Any, host: str, port: int) -> Any:
            return TCP4ClientEndpoint(reactor, host, port, timeout=10,
                                      bindAddress=(source, 0) if source else None)

        deadline = self.reactor.seconds() + timeout
        for i in range(0, len(users), batch):
            for user, token in users[i:i + batch]:
                session = ClientSession(GatewayClient(base, token=token), self.reactor, user,
                                        token, device="storm", last_seq=0,
                                        endpoint_factory=endpoint)
                record = _StormRecord(session, self.reactor)
                session.subscribe(record.event)
                self.storm.append(record)
                session.start(node)
            while (sum(r.session.connected for r in self.storm) < len(self.storm)
                   and self.reactor.seconds() < deadline):
                yield task.deferLater(self.reactor, 0.05, lambda: None)
        on_node = sum(1 for r in self.storm
                      if r.session.connected and r.session.node is not None
                      and r.session.node.id == node["id"])
        return {"ok": True, "connected": sum(r.session.connected for r in self.storm),
                "on_node": on_node}

    def cmd_storm_status(self, since: float, detail: bool = False) -> dict[str, Any]:
        """Where the storm's sessions are: connected, back after ``since`` (the kill), and
        (with ``detail``) the mids each user was shown."""
        back = [r.back_at - since for r in self.storm
                if r.back_at is not None and r.lost_at is not None and r.lost_at >= since]
        out: dict[str, Any] = {
            "ok": True, "total": len(self.storm),
            "connected": sum(r.session.connected for r in self.storm),
            "disconnected_after": sum(1 for r in self.storm
                                      if r.lost_at is not None and r.lost_at >= since),
            "back": len(back), "back_s": [round(b, 3) for b in back],
            "duplicates": sum(r.duplicates for r in self.storm),
            "reconnect_attempts": sum(r.attempts for r in self.storm)}
        if detail:
            out["received"] = {r.session.user: r.mids for r in self.storm}
            out["back_users"] = [r.session.user for r in self.storm
                                 if r.session.connected and (r.lost_at is None
                                                             or r.back_at is not None)]
        return out

    def cmd_storm_stop(self) -> dict[str, Any]:
        """Stop every storm session."""
        for r in self.storm:
            r.session.stop()
        self.storm = []
        return {"ok": True}

    def cmd_quit(self) -> dict[str, Any]:
        """Stop the worker after answering."""
        self.reactor.callLater(0.05, self.reactor.stop)
        return {"ok": True}


class ControlChannel(LineReceiver):
    """Reads JSON commands from stdin, one per line, and writes one JSON answer per line."""

    #: Set by makeConnection before any other method runs.
    transport: IStreamTransport

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.queue: defer.DeferredLock = defer.DeferredLock()

    def lineReceived(self, line: bytes) -> None:
        try:
            cmd = json.loads(line)
        except ValueError as e:
            self.answer({"ok": False, "error": f"bad command: {e}"})
            return
        self.queue.run(self._run, cmd)

    def _run(self, cmd: dict[str, Any]) -> defer.Deferred[None]:
        d = self.worker.handle(cmd)
        d.addErrback(lambda f: {"ok": False, "error": f.getTraceback()[-2000:]})
        return d.addCallback(self.answer)

    def answer(self, obj: dict[str, Any]) -> None:
        """Write one answer line."""
        self.transport.write(json.dumps(obj).encode() + b"\n")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        reactor = self.worker.reactor
        if reactor.running:
            reactor.stop()


def main() -> None:
    """Serve commands on stdin/stdout until ``quit`` or end of input."""
    from twisted.internet import reactor, stdio
    stdio.StandardIO(ControlChannel(Worker(reactor)))
    reactor.run()


if __name__ == "__main__":
    main()
    sys.exit(0)
