"""The client core's part 2: presence, typing, read marks, notify, the roster, and the
gateway's people, group and file calls (MemoryReactorClock, StringTransport, StubTreq)."""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

from types import SimpleNamespace

import treq
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Request

from dim import errors
from dim.client import events as E
from dim.client import chat as C
from dim.client import transfer
from dim.client.cache import ChatMessage, MessageCache
from dim.client.gateway import GatewayClient, ProgressBodyProducer
from dim.client.roster import Roster, initials
from dim.protocol import frames as F
from tests.fakes.client import client
from tests.fakes.client import NODE1, NodeSide, SessionTestCase, msg, sending


class SignalTests(SessionTestCase):
    """presence, typing, read and notify frames become events; typing and read go out."""

    def test_presence_event(self) -> None:
        """A presence frame is reported as PresenceChanged."""
        session, reactor, _, events, side = self.connect()
        side.send(F.Presence(user="bob", online=True), F.Presence(user="bob", online=False))
        self.assertEqual(events.of(E.PresenceChanged),
                         [E.PresenceChanged("bob", True), E.PresenceChanged("bob", False)])

    def test_typing_notice_names_the_conversation(self) -> None:
        """typing from bob to alice is bob's conversation; in a group it is #group."""
        session, reactor, _, events, side = self.connect()
        side.send(F.TypingNotice(from_="bob", to="alice"), F.TypingNotice(from_="carol",
                                                                          group="g1"))
        self.assertEqual(events.of(E.PeerTyping),
                         [E.PeerTyping("bob", "bob"), E.PeerTyping("carol", "#g1")])

    def test_typing_is_throttled_per_conversation(self) -> None:
        """At most one typing frame per conversation every 3 s; offline writes none."""
        session, reactor, _, _, side = self.connect()
        self.assertTrue(session.typing(to="bob"))
        self.assertFalse(session.typing(to="bob"))
        self.assertTrue(session.typing(group="g1"))
        reactor.advance(2.9)
        self.assertFalse(session.typing(to="bob"))
        reactor.advance(0.2)
        self.assertTrue(session.typing(to="bob"))
        frames = [f for f in side.received() if isinstance(f, F.Typing)]
        self.assertEqual([(f.to, f.group) for f in frames], [("bob", None), (None, "g1"), ("bob",
                                                                                           None)])
        session.stop()
        reactor.advance(10)
        self.assertFalse(session.typing(to="bob"))

    def test_read_is_cumulative_and_waits_for_the_connection(self) -> None:
        """read(seq) is written once per higher seq, capped at the handled seq, queued offline."""
        session, reactor, _, _, side = self.connect(answers=[NODE1])
        side.send(msg(1), msg(2), msg(3))
        side.received()
        self.assertTrue(session.read(2))
        self.assertFalse(session.read(2))
        self.assertFalse(session.read(1))
        self.assertTrue(session.read(99))
        self.assertEqual([f.seq for f in side.received() if isinstance(f, F.Read)], [2, 3])
        side.send(msg(4))
        side.lose()
        self.assertFalse(session.read(4))
        reactor.advance(1)
        side2 = NodeSide(reactor)
        side2.welcome(last_seq=4)
        self.assertEqual([f.seq for f in side2.received() if isinstance(f, F.Read)], [4])

    def test_receipt_marks_own_message_read(self) -> None:
        """A read receipt moves one's own message to read and records who read it."""
        cache = MessageCache(":memory:", "alice")
        session, reactor, _, events, side = self.connect(cache=cache)
        out = sending(session, "bob", "hi")
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=5))
        side.send(F.ReadNotice(id=out.id, mid="m1", by="bob"))
        self.assertEqual(out.state, E.READ)
        self.assertEqual(out.read_by, {"bob"})
        self.assertEqual([e.state for e in events.of(E.MessageStatus)], [E.SENDING, E.SENT, E.READ])
        side.send(F.Delivered(id=out.id, mid="m1", by="bob"))  # late: never goes back
        self.assertEqual(out.state, E.READ)
        self.assertTrue(cache.get(1).read)
        self.assertEqual(events.of(E.ReadReceipt), [E.ReadReceipt(out.id, "m1", "bob")])

    def test_group_receipts_count_members(self) -> None:
        """Group receipts are counted per member; the message is not read on the first one."""
        session, reactor, _, events, side = self.connect()
        out = sending(session, None, "hi all", group="g1")
        (send,) = [f for f in side.received() if isinstance(f, F.Send)]
        self.assertEqual((send.group, send.to), ("g1", None))
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=5))
        side.send(F.Delivered(id=out.id, mid="m1", by="bob"), F.Delivered(id=out.id, mid="m1",
                                                                          by="carol"),
                  F.ReadNotice(id=out.id, mid="m1", by="bob"))
        self.assertEqual(out.delivered_by, {"bob", "carol"})
        self.assertEqual(out.read_by, {"bob"})
        self.assertEqual(out.state, E.DELIVERED)

    def test_self_read_clears_unread(self) -> None:
        """read {seq, by: me} from another device clears unread up to seq here too."""
        cache = MessageCache(":memory:", "alice")
        session, reactor, _, events, side = self.connect(cache=cache)
        side.send(msg(1), msg(2), msg(3, sender="carol"))
        self.assertEqual({c.peer: c.unread for c in cache.conversations()}, {"bob": 2, "carol": 1})
        side.send(F.ReadNotice(seq=2, by="alice"))
        self.assertEqual(events.of(E.ReadUpTo), [E.ReadUpTo(2)])
        self.assertEqual({c.peer: c.unread for c in cache.conversations()}, {"bob": 0, "carol": 1})
        side.received()
        self.assertFalse(session.read(2))  # the other device already said so

    def test_someone_elses_seq_read_is_ignored(self) -> None:
        """A seq-form read by another user is not a self-read."""
        session, reactor, _, events, side = self.connect()
        side.send(F.ReadNotice(seq=2, by="bob"))
        self.assertEqual(events.of(E.ReadUpTo), [])

    def test_notify_event(self) -> None:
        """notify frames are reported with their fields."""
        session, reactor, _, events, side = self.connect()
        side.send(F.Notify(event="contact_request", from_="bob"), F.Notify(event="group_changed",
                                                                           group="g1"))
        self.assertEqual(events.of(E.Notified), [E.Notified("contact_request", {"from": "bob"}),
                                                 E.Notified("group_changed", {"group": "g1"})])

    def test_file_message_round_trip(self) -> None:
        """A send with a file carries it; a received file message keeps it in the cache."""
        cache = MessageCache(":memory:", "alice")
        session, reactor, _, events, side = self.connect(cache=cache)
        ref = {"id": "f1", "name": "cat.png", "size": 10, "mime": "image/png"}
        sending(session, "bob", "", kind="image", file=ref)
        (send,) = [f for f in side.received() if isinstance(f, F.Send)]
        self.assertEqual((send.kind, send.file.id, send.file.name), ("image", "f1", "cat.png"))
        side.send(msg(2, kind="file", body="", file=F.FileRef(id="f2", name="a.txt", size=3,
                                                              mime="text/plain")))
        (got,) = events.of(E.MessageReceived)
        self.assertEqual(got.entry.file, {"id": "f2", "name": "a.txt", "size": 3,
                                          "mime": "text/plain"})
        self.assertEqual(cache.get(2).file["name"], "a.txt")
        self.assertRaises(errors.BadRequest, session.send, "bob", "", kind="text", file=ref)
        self.assertRaises(errors.BadRequest, session.send, "bob", "", kind="file", file={"id": "x"})


class CacheCountTests(unittest.TestCase):
    """The cache's own unread counts, the fallback while offline."""

    def m(self, seq: int, sender: str, to: str = "alice", **kw: Any) -> ChatMessage:
        """A cached message at ``seq``."""
        return ChatMessage(seq=seq, mid=f"m{seq}", id=f"c{seq}", sender=sender, to=to, ts=seq, **kw)

    def test_seen_part_way_counts_only_the_rest(self) -> None:
        """The cache's own counts (shown offline): a conversation seen up to a seq counts
        only what came after it, and no other conversation changes."""
        cache = MessageCache(":memory:", "alice")
        cache.put_many([self.m(1, "bob"), self.m(2, "carol"), self.m(3, "bob"),
                        self.m(4, "alice", to="carol"), self.m(5, "bob")])
        cache.mark_seen("bob", 3)
        self.assertEqual({c.peer: c.unread for c in cache.conversations()},
                         {"bob": 1, "carol": 1})
        cache.mark_seen("bob", 1)  # never back
        self.assertEqual({c.peer: c.unread for c in cache.conversations()}["bob"], 1)

    def test_server_read_flag_counts_as_seen(self) -> None:
        """A received message listed with read: true is not unread (read on another device)."""
        cache = MessageCache(":memory:", "alice")
        cache.put_many([self.m(1, "bob", read=True), self.m(2, "bob")])
        self.assertEqual(cache.conversations()[0].unread, 1)

    def test_old_cache_gains_the_file_column(self) -> None:
        """A cache file written before files existed is opened and extended."""
        import sqlite3
        path = os.path.join(self.mktemp(), "alice.sqlite3")
        os.makedirs(os.path.dirname(path))
        db = sqlite3.connect(path)
        db.executescript(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, mid TEXT NOT NULL, id TEXT NOT NULL,"
            " sender TEXT NOT NULL, ts INTEGER NOT NULL, to_user TEXT, grp TEXT,"
            " body TEXT NOT NULL,"
            " kind TEXT NOT NULL, delivered INTEGER NOT NULL DEFAULT 0, read INTEGER NOT NULL"
            " DEFAULT 0, peer TEXT NOT NULL);"
            "INSERT INTO messages VALUES"
            " (1,'m1','c1','bob',1,'alice',NULL,'old','text',0,0,'bob');")
        db.commit()
        db.close()
        cache = MessageCache(path, "alice")
        self.assertEqual(cache.get(1).body, "old")
        cache.put(self.m(2, "bob", file={"id": "f", "name": "n", "size": 1, "mime": "x/y"}))
        self.assertEqual(cache.get(2).file["id"], "f")


def connected_chat() -> tuple[C.ChatClient, Any]:
    """A ChatClient for alice with carol's message 1 and bob's 2 and 3, and the node side."""
    from twisted.internet.testing import MemoryReactorClock
    reactor = MemoryReactorClock()
    chat = C.ChatClient(FakeGateway(), reactor,  # type: ignore[arg-type]
                        cache_factory=lambda url, user: MessageCache(":memory:", user))
    chat._start("alice", "tok", {"id": "n1", "host": "127.0.0.1", "port": 9000})
    side = NodeSide(reactor)
    side.welcome()
    side.send(msg(1, sender="carol"), msg(2), msg(3))
    side.received()
    return chat, side


class ChatSendTests(SessionTestCase):
    """ChatClient.send gives the message, whose fate the events tell."""

    def test_send_gives_the_message_and_failures_are_events_only(self) -> None:
        """send returns the outgoing message; its failure is a MessageStatus, not a logged
        error; retry gives the message again and sends the same id."""
        import gc
        chat, side = connected_chat()
        seen: list[Any] = []
        chat.subscribe(seen.append)
        out = chat.send("bob", "hi")
        self.assertIs(out, chat.session.outgoing[out.id])
        refused = chat.send("#g1", "all")
        self.assertEqual(refused.group, "g1")
        side.send(F.Error(code="forbidden", message="not a member", ref=refused.id))
        chat.reactor.pump([4, 4])
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual((out.state, refused.state), (E.FAILED, E.FAILED))
        self.assertEqual([e.id for e in seen if isinstance(e, E.MessageStatus)
                          and e.state == E.FAILED], [refused.id, out.id])
        side.received()
        self.assertIs(chat.retry(out.id), out)
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], [out.id])
        chat.stop()

    def test_expiry_fails_the_pending_sends_as_events_only(self) -> None:
        """A refused token fails the message being sent, and one sent afterwards, with a
        MessageStatus and no logged error."""
        import gc
        chat, side = connected_chat()
        out = chat.send("bob", "hi")
        side.send(F.Error(code="unauthorized", message="token expired"))
        late = chat.send("bob", "late")
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual((out.state, late.state), (E.FAILED, E.FAILED))
        self.assertEqual(late.error, "session expired: token expired")


class ImmediateFailureTests(unittest.TestCase):
    """File calls fail through their Deferred, never by raising."""

    def test_send_file_without_session_or_file(self) -> None:
        """No session, or no such file: a failed Deferred, not an exception."""
        from twisted.internet.testing import MemoryReactorClock
        chat = C.ChatClient(FakeGateway(), MemoryReactorClock(), cache_factory=None)  # type: ignore[arg-type]
        self.failureResultOf(chat.send_file("bob", "/no/such/file"), errors.Unauthorized)
        self.failureResultOf(chat.set_avatar("/no/such/file"), FileNotFoundError)


class FakeGateway:
    """The part 2 gateway calls, answered from dicts, recording calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.contacts_answer: list[dict[str, Any]] = []
        self.groups_answer: list[dict[str, Any]] = []
        self.base_url = "http://gw.test"
        self.token = "tok"

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def contacts(self) -> defer.Deferred[dict[str, Any]]:
        self._record("contacts")
        return defer.succeed({"contacts": [dict(c) for c in self.contacts_answer]})

    def groups(self) -> defer.Deferred[dict[str, Any]]:
        self._record("groups")
        return defer.succeed({"groups": [dict(g) for g in self.groups_answer]})

    def profile(self) -> defer.Deferred[dict[str, Any]]:
        self._record("profile")
        return defer.succeed({"user": "alice", "name": "Alice A", "status": "hi", "avatar": None})

    def conversations(self, limit: int = 50) -> defer.Deferred[dict[str, Any]]:
        self._record("conversations")
        return defer.succeed({"conversations": []})

    def user(self, name: str) -> defer.Deferred[dict[str, Any]]:
        self._record("user", name)
        return defer.succeed({"user": name, "name": name.title() + " X", "online": False})


class RosterTests(unittest.TestCase):
    """The roster: ordering, presence, names, and refetching on notify."""

    def test_order_presence_and_names(self) -> None:
        """Requests first, then online, offline, asked; presence flips the dot; names known."""
        gw = FakeGateway()
        gw.contacts_answer = [
            {"user": "dave", "name": "Dave", "online": False, "pending": "out"},
            {"user": "bob", "name": "Bob B", "online": False, "pending": None},
            {"user": "carol", "name": "Carol", "online": True, "pending": None},
            {"user": "erin", "name": "Erin", "online": False, "pending": "in"}]
        gw.groups_answer = [{"id": "g1", "name": "team", "owner": "alice",
                             "members": ["alice", "bob", "zed"]}]
        changes: list[str] = []
        roster = Roster(gw, "alice", changes.append)
        roster.refresh()
        self.assertEqual([c["user"] for c in roster.contact_list()], ["erin", "carol", "bob",
                                                                      "dave"])
        self.assertTrue(roster.set_online("bob", True))
        self.assertFalse(roster.set_online("bob", True))
        self.assertEqual([c["user"] for c in roster.contact_list()], ["erin", "bob", "carol",
                                                                      "dave"])
        self.assertEqual(roster.name("bob"), "Bob B")
        self.assertEqual(roster.name("zed"), "Zed X")  # looked up: a member, not a contact
        self.assertEqual(roster.name("alice"), "Alice A")
        self.assertEqual(roster.online("dave"), None)
        self.assertEqual([c for c in gw.calls if c[0] == "user"], [("user", ("zed",))])
        self.assertIn("contacts", changes)
        self.assertIn("groups", changes)

    def test_learn_newer_name(self) -> None:
        """A user record fetched later updates the contact's name and status."""
        gw = FakeGateway()
        gw.contacts_answer = [{"user": "bob", "name": "bob", "status": "", "online": True,
                               "pending": None}]
        changes: list[str] = []
        roster = Roster(gw, "alice", changes.append)
        roster.refresh_contacts()
        roster.learn({"user": "bob", "name": "Bob B", "status": "away", "online": True})
        self.assertEqual((roster.name("bob"), roster.contacts["bob"]["status"]), ("Bob B", "away"))
        self.assertEqual(changes[-1], "names")
        changes.clear()
        roster.learn({"user": "bob", "name": "Bob B", "status": "away"})
        self.assertEqual(changes, [])

    def test_initials(self) -> None:
        """Avatars as initials: first and last word, or the first letter."""
        self.assertEqual(initials("Alice Smith"), "AS")
        self.assertEqual(initials("bob"), "B")
        self.assertEqual(initials("mary-jane watson"), "MW")
        self.assertEqual(initials(""), "?")

    def test_chat_client_refetches_on_notify(self) -> None:
        """ChatClient applies presence at once and refetches contacts/groups on notify."""
        from twisted.internet.testing import MemoryReactorClock
        gw = FakeGateway()
        gw.contacts_answer = [{"user": "bob", "name": "Bob", "online": False, "pending": None}]
        chat = C.ChatClient(gw, MemoryReactorClock(), cache_factory=None)  # type: ignore[arg-type]
        chat.roster = Roster(gw, "alice", lambda what: chat.emit(E.RosterChanged(what)))
        chat.user = "alice"
        seen: list[Any] = []
        chat.subscribe(seen.append)
        chat._relay(E.Connected(E.NodeAddress("n1", "h", 1), "alice", 0))
        self.assertEqual(chat.is_online("bob"), False)
        chat._relay(E.PresenceChanged("bob", True))
        self.assertEqual(chat.is_online("bob"), True)
        gw.calls.clear()
        chat._relay(E.Notified("contact_request", {"from": "erin"}))
        chat._relay(E.Notified("group_changed", {"group": "g1"}))
        self.assertEqual([c[0] for c in gw.calls], ["contacts", "groups"])
        self.assertIn(E.RosterChanged("contacts"), seen)


class PeopleCallTests(unittest.TestCase):
    """Each part 2 gateway call's method, path, query and body."""

    def test_people_calls(self) -> None:
        """search, profile get/put, contacts get/post/delete go where the contract says."""
        gw, res = client((200, {"users": []}), (200, {"user": "a"}), (200, {"user": "a"}),
                         (200, {"contacts": []}), (200, {"contact": {}}), (200, {}))
        gw.token = "T"
        self.successResultOf(gw.search_users("ali", limit=5))
        self.successResultOf(gw.profile())
        self.successResultOf(gw.update_profile(name="Alice", status="busy"))
        self.successResultOf(gw.contacts())
        self.successResultOf(gw.add_contact("bob"))
        self.successResultOf(gw.remove_contact("bob"))
        got = [(r["method"], r["path"], r["args"], r["json"]) for r in res.requests]
        self.assertEqual(got, [
            ("GET", "/v1/users", {"q": ["ali"], "limit": ["5"]}, None),
            ("GET", "/v1/profile", {}, None),
            ("PUT", "/v1/profile", {}, {"name": "Alice", "status": "busy"}),
            ("GET", "/v1/contacts", {}, None),
            ("POST", "/v1/contacts", {}, {"user": "bob"}),
            ("DELETE", "/v1/contacts/bob", {}, None)])
        self.assertTrue(all(r["auth"] == "Bearer T" for r in res.requests))
        self.assertRaises(errors.BadRequest, gw.update_profile, colour="red")

    def test_group_calls(self) -> None:
        """create, list, get, rename, add and remove members go where the contract says."""
        g = {"group": {"id": "g 1", "name": "n", "owner": "a", "members": ["a"]}}
        gw, res = client((201, g), (200, {"groups": []}), (200, g), (200, g), (200, g), (200, {}))
        gw.token = "T"
        self.successResultOf(gw.create_group("team", ["bob", "carol"]))
        self.successResultOf(gw.groups())
        self.successResultOf(gw.group("g 1"))
        self.successResultOf(gw.rename_group("g 1", "crew"))
        self.successResultOf(gw.add_members("g 1", ["dave"]))
        self.successResultOf(gw.remove_member("g 1", "dave"))
        got = [(r["method"], r["path"], r["json"]) for r in res.requests]
        self.assertEqual(got, [
            ("POST", "/v1/groups", {"name": "team", "members": ["bob", "carol"]}),
            ("GET", "/v1/groups", None),
            ("GET", "/v1/groups/g%201", None),
            ("PUT", "/v1/groups/g%201", {"name": "crew"}),
            ("POST", "/v1/groups/g%201/members", {"users": ["dave"]}),
            ("DELETE", "/v1/groups/g%201/members/dave", None)])

    def test_forbidden_group(self) -> None:
        """A 403 becomes errors.Forbidden."""
        gw, _ = client((403, {"error": {"code": "forbidden", "message": "not a member"}}))
        gw.token = "T"
        self.failureResultOf(gw.group("g1"), errors.Forbidden)


class UploadSink(Resource):
    """Takes POST /v1/files and answers like the gateway, keeping the body."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.requests: list[dict[str, Any]] = []

    def render_POST(self, request: Request) -> bytes:
        body = request.content.read()
        self.bodies.append(body)
        self.requests.append({"name": request.args[b"name"][0].decode(),
                              "mime": request.getHeader("content-type")})
        if len(body) > 1000:
            request.setResponseCode(413)
            return json.dumps({"error": {"code": "too_large", "message": "over 1000"}}).encode()
        request.setResponseCode(201)
        return json.dumps({"file": {"id": "f1", "name": request.args[b"name"][0].decode(),
                                    "size": len(body), "mime": request.getHeader("content-type"),
                                    "sha256": hashlib.sha256(body).hexdigest()}}).encode()


class RangedBytes(Resource):
    """Serves fixed bytes as the gateway does: 200 whole, 206 for ``Range: bytes=N-``, 416 after."""

    isLeaf = True

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.ranges: list[str | None] = []

    def render_GET(self, request: Request) -> bytes:
        wanted = request.getHeader("range")
        self.ranges.append(wanted)
        request.setHeader("content-type", "application/octet-stream")
        if not wanted:
            request.setHeader("content-length", str(len(self.data)))
            return self.data
        start = int(wanted.split("=", 1)[1].rstrip("-"))
        if start >= len(self.data):
            request.setResponseCode(416)
            request.setHeader("content-range", f"bytes */{len(self.data)}")
            return b""
        request.setResponseCode(206)
        request.setHeader("content-range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        return self.data[start:]


class FileCallTests(unittest.TestCase):
    """Uploads stream with progress; downloads resume with Range."""

    def upload(self, data: bytes) -> tuple[Any, UploadSink, list[tuple[int, int]]]:
        """Upload ``data``: the Deferred, the sink that got it, and the progress calls."""
        # StubTreq takes only bytes bodies; its agent (the real Agent over iosim) takes
        # the body producer, so the upload streams as it would over TCP.
        sink = UploadSink()
        agent = RequestTraversalAgent(sink)
        http = HTTPClient(agent)
        stub = SimpleNamespace(request=http.request, content=treq.content, collect=treq.collect,
                               flush=agent.flush)
        gw = GatewayClient("http://gw.test", stub, token="T")
        clock = task.Clock()
        coop = task.Cooperator(scheduler=lambda f: clock.callLater(0, f), started=True)
        progress: list[tuple[int, int]] = []
        d = gw.upload(io.BytesIO(data), "cat.png", "image/png", lambda a, b: progress.append((a,
                                                                                              b)),
                      cooperator=coop)
        for _ in range(200):
            clock.advance(0)
            stub.flush()
        return d, sink, progress

    def test_upload_streams_with_progress(self) -> None:
        """The body goes in chunks, progress climbs to the total, the answer is the file."""
        data = os.urandom(900)
        d, sink, progress = self.upload(data)
        file = self.successResultOf(d)
        self.assertEqual(sink.bodies, [data])
        self.assertEqual(sink.requests, [{"name": "cat.png", "mime": "image/png"}])
        self.assertEqual(file["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(progress[-1], (900, 900))

    def test_producer_reads_in_chunks(self) -> None:
        """The producer reads the file a chunk at a time, counting as it goes."""
        clock = task.Clock()
        coop = task.Cooperator(scheduler=lambda f: clock.callLater(0, f), started=True)
        seen: list[tuple[int, int]] = []
        producer = ProgressBodyProducer(io.BytesIO(b"x" * 250), lambda a, b: seen.append((a, b)),
                                        coop, read_size=100)
        out = io.BytesIO()
        d = producer.startProducing(out)
        for _ in range(10):
            clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(seen, [(100, 250), (200, 250), (250, 250)])
        self.assertEqual(out.getvalue(), b"x" * 250)

    def test_upload_too_large(self) -> None:
        """A 413 becomes errors.TooLarge."""
        d, _, _ = self.upload(b"y" * 2000)
        self.failureResultOf(d, errors.TooLarge)

    def serve(self, data: bytes) -> tuple[GatewayClient, str]:
        """A GatewayClient whose /v1/files/f1 serves ``data`` with Range, and a scratch dir."""
        where = self.mktemp()
        os.makedirs(where)
        with open(os.path.join(where, "blob"), "wb") as f:
            f.write(data)
        root = Resource()
        v1 = Resource()
        files = Resource()
        root.putChild(b"v1", v1)
        v1.putChild(b"files", files)
        files.putChild(b"f1", RangedBytes(data))
        self.stub = StubTreq(root)
        return GatewayClient("http://gw.test", self.stub, token="T"), where

    def done(self, d: defer.Deferred[Any]) -> Any:
        """Pump the stub HTTP connection until ``d`` has fired; its result."""
        for _ in range(100):
            self.stub.flush()
        return self.successResultOf(d)

    def test_download_then_resume_with_range(self) -> None:
        """A whole download, then a partial one finished with Range: same bytes, progress to end."""
        data = os.urandom(5000)
        gw, where = self.serve(data)
        path = os.path.join(where, "out")
        progress: list[tuple[int, int]] = []
        self.assertEqual(self.done(gw.download("f1", path, lambda a, b: progress.append((a, b)))),
                         5000)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(progress[-1], (5000, 5000))
        with open(path, "wb") as f:
            f.write(data[:1234])
        progress.clear()
        self.assertEqual(self.done(gw.download("f1", path, lambda a, b: progress.append((a, b)))),
                         5000)
        with open(path, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(progress[0], (1234, 5000))
        self.assertEqual(progress[-1], (5000, 5000))

    def test_download_already_whole(self) -> None:
        """A partial file that is already whole (416) is left as it is."""
        data = b"z" * 100
        gw, where = self.serve(data)
        path = os.path.join(where, "out")
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(self.done(gw.download("f1", path)), 100)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)


class TransferNameTests(unittest.TestCase):
    """File names, kinds and sizes."""

    def test_names(self) -> None:
        """Names lose directories and hiding; taken names get a number."""
        self.assertEqual(transfer.safe_name("../../etc/passwd"), "passwd")
        self.assertEqual(transfer.safe_name(".bashrc"), "bashrc")
        self.assertEqual(transfer.safe_name("a\x00b\\c"), "c")
        where = self.mktemp()
        os.makedirs(where)
        first = transfer.free_path(where, "a.txt")
        open(first, "w").close()
        self.assertEqual(os.path.basename(transfer.free_path(where, "a.txt")), "a (1).txt")

    def test_kinds_and_sizes(self) -> None:
        """Images by mime are kind image; sizes read like people write them."""
        self.assertEqual(transfer.kind_for(transfer.mime_of("x.png")), "image")
        self.assertEqual(transfer.kind_for(transfer.mime_of("x.pdf")), "file")
        self.assertEqual(transfer.human_size(512), "512 B")
        self.assertEqual(transfer.human_size(1536), "1.5 KB")
        self.assertEqual(transfer.describe_file("image", {"name": "c.png", "size": 2048}),
                         "[image: c.png, 2.0 KB]")
