"""The client's SQLite message cache, its saved settings and tokens, and ChatClient's login."""
from __future__ import annotations

import os
import stat

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from dim.client import events as E
from dim.client import chat as C
from dim.client.cache import ChatMessage, MessageCache
from dim.client.config import ClientConfig


def m(seq: int, sender: str = "bob", to: str = "alice", **kw: object) -> ChatMessage:
    """A cached message at ``seq``."""
    kw.setdefault("body", f"body {seq}")
    return ChatMessage(seq=seq, mid=f"m{seq}", id=f"c{seq}", sender=sender, to=to, ts=seq * 1000,
                       **kw)  # type: ignore[arg-type]


class CacheTests(unittest.TestCase):
    """Storing, listing and reopening the cache."""

    def test_put_is_once_per_seq(self) -> None:
        """A seq is stored once; a later copy only adds the delivered mark."""
        cache = MessageCache(":memory:", "alice")
        self.assertTrue(cache.put(m(1, sender="alice", to="bob")))
        self.assertFalse(cache.put(m(1, sender="alice", to="bob", delivered=True)))
        (only,) = cache.history("bob")
        self.assertTrue(only.delivered)

    def test_conversations_newest_first_with_unread(self) -> None:
        """Conversations are ordered by their newest message and count unread ones from others."""
        cache = MessageCache(":memory:", "alice")
        cache.put_many([m(1), m(2, sender="carol"), m(3), m(4, sender="alice", to="carol")])
        convs = cache.conversations()
        self.assertEqual([(c.peer, c.unread) for c in convs], [("carol", 1), ("bob", 2)])
        cache.mark_seen("bob")
        self.assertEqual({c.peer: c.unread for c in cache.conversations()}, {"carol": 1, "bob": 0})

    def test_history_pages_backwards(self) -> None:
        """history returns the newest messages below a seq, oldest first."""
        cache = MessageCache(":memory:", "alice")
        cache.put_many(m(i) for i in range(1, 11))
        self.assertEqual([x.seq for x in cache.history("bob", limit=3)], [8, 9, 10])
        self.assertEqual([x.seq for x in cache.history("bob", before_seq=8, limit=3)], [5, 6, 7])

    def test_first_missing(self) -> None:
        """first_missing finds the lowest absent seq, bounded by ``below``."""
        cache = MessageCache(":memory:", "alice")
        self.assertEqual(cache.first_missing(), 1)
        cache.put_many([m(1), m(2), m(4)])
        self.assertEqual(cache.first_missing(), 3)
        self.assertIsNone(cache.first_missing(below=3))

    def test_reopen_keeps_history_and_seq(self) -> None:
        """A reopened cache file shows the same history and last seq."""
        path = os.path.join(self.mktemp(), "alice.sqlite3")
        cache = MessageCache(path, "alice")
        cache.put(m(1))
        cache.last_seq = 1
        cache.close()
        again = MessageCache(path, "alice")
        self.assertEqual(again.last_seq, 1)
        self.assertEqual([x.body for x in again.history("bob")], ["body 1"])

    def test_receipts_survive_reopening(self) -> None:
        """Who acknowledged and read a group message is kept, per user, across a reopen."""
        path = os.path.join(self.mktemp(), "alice.sqlite3")
        cache = MessageCache(path, "alice")
        cache.add_receipt("m1", "bob", False)
        cache.add_receipt("m1", "carol", True)
        cache.add_receipt("m1", "bob", True)
        cache.add_receipt("m1", "carol", False)  # a late delivered never undoes a read
        cache.close()
        again = MessageCache(path, "alice")
        self.assertEqual(again.receipts(["m1", "m2"]), {"m1": ({"bob", "carol"}, {"bob", "carol"})})


class ReaderTests(unittest.TestCase):
    """The upload source that reads as empty once closed."""

    def test_read_after_close_is_empty(self) -> None:
        """Reading a closed upload source gives b'' (ends the producer) instead of raising."""
        from dim.client.transfer import ClosableReader
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"abcdef")
        reader = ClosableReader(open(path, "rb"))
        self.assertEqual(reader.read(2), b"ab")
        reader.close()
        self.assertEqual(reader.read(2), b"")


class ConfigTests(unittest.TestCase):
    """Settings and tokens on disk."""

    def test_token_file_is_private(self) -> None:
        """Tokens are saved with mode 0600 and read back per gateway and user."""
        base = self.mktemp()
        config = ClientConfig(os.path.join(base, "c"), os.path.join(base, "s"))
        config.save_token("http://gw", "alice", "T", expires=None)
        self.assertEqual(stat.S_IMODE(os.stat(config.token_path).st_mode), 0o600)
        self.assertEqual(config.token("http://gw", "alice"), "T")
        self.assertIsNone(config.token("http://other", "alice"))
        config.forget_token("http://gw", "alice")
        self.assertIsNone(config.token("http://gw", "alice"))

    def test_expired_token_is_not_used(self) -> None:
        """A token past its expiry (seconds or milliseconds) is not returned."""
        base = self.mktemp()
        config = ClientConfig(os.path.join(base, "c"), os.path.join(base, "s"))
        config.save_token("http://gw", "alice", "T", expires=1000)
        self.assertIsNone(config.token("http://gw", "alice", now=2000))
        config.save_token("http://gw", "alice", "T", expires=3_000_000_000_000)
        self.assertEqual(config.token("http://gw", "alice", now=2000), "T")

    def test_remember_last_gateway_and_user(self) -> None:
        """The last gateway and user survive; the default gateway is the embedded dim's."""
        base = self.mktemp()
        config = ClientConfig(os.path.join(base, "c"), os.path.join(base, "s"))
        self.assertEqual(config.gateway, "http://127.0.0.1:8080")
        config.remember("http://gw:1", "alice")
        self.assertEqual((config.gateway, config.user), ("http://gw:1", "alice"))


class FakeLoginGateway:
    """A gateway stand-in for ChatClient: login, route, one conversation's messages."""

    base_url = "http://gw"

    def __init__(self) -> None:
        self.token: str | None = None
        self.pages: list[dict[str, object]] = []

    def login(self, user: str, password: str) -> defer.Deferred[dict[str, object]]:
        """Accept only the password secret123."""
        if password != "secret123":
            from dim import errors
            return defer.fail(errors.Unauthorized("wrong password"))
        self.token = "T"
        return defer.succeed({"token": "T", "user": user, "expires": None,
                              "node": {"id": "n1", "host": "127.0.0.1", "port": 9000}})

    def route(self, exclude: object = ()) -> defer.Deferred[dict[str, object]]:
        """Always node n1."""
        return defer.succeed({"node": {"id": "n1", "host": "127.0.0.1", "port": 9000}})

    def conversation_messages(self, with_: str | None = None, group: str | None = None,
                              before: int | None = None, after: int = 0,
                              limit: int = 100) -> defer.Deferred[dict[str, object]]:
        """A conversation of six messages from bob, paged like the gateway."""
        self.pages.append({"with": with_, "before": before, "limit": limit})
        top = min(before or 7, 7)
        msgs = [{"seq": s, "mid": f"m{s}", "id": f"c{s}", "from": "bob", "to": "alice",
                 "ts": s, "body": f"old {s}"} for s in range(max(1, top - limit), top)]
        return defer.succeed({"messages": msgs, "last_seq": 6, "more": top - limit > 1})

    def conversations(self, limit: int = 50) -> defer.Deferred[dict[str, object]]:
        """No conversation yet."""
        return defer.succeed({"conversations": []})

    def contacts(self) -> defer.Deferred[dict[str, object]]:
        """Nobody."""
        return defer.succeed({"contacts": []})

    def groups(self) -> defer.Deferred[dict[str, object]]:
        """No group."""
        return defer.succeed({"groups": []})

    def profile(self) -> defer.Deferred[dict[str, object]]:
        """A bare profile."""
        return defer.succeed({"user": "alice"})


class ChatClientTests(unittest.TestCase):
    """ChatClient ties login, config, cache and session together."""

    def make(self) -> tuple[C.ChatClient, MemoryReactorClock, ClientConfig, FakeLoginGateway]:
        """A ChatClient with settings in a temporary directory and an in-memory cache."""
        base = self.mktemp()
        config = ClientConfig(os.path.join(base, "c"), os.path.join(base, "s"))
        reactor = MemoryReactorClock()
        gateway = FakeLoginGateway()
        client = C.ChatClient(gateway, reactor, config=config,  # type: ignore[arg-type]
                              cache_factory=lambda url, user: MessageCache(":memory:", user))
        return client, reactor, config, gateway

    def test_login_saves_token_and_connects(self) -> None:
        """A login saves the token, remembers the user and connects to the login's node."""
        client, reactor, config, _ = self.make()
        self.successResultOf(client.login("alice", "secret123"))
        self.assertEqual(config.token("http://gw", "alice"), "T")
        self.assertEqual(config.user, "alice")
        self.assertEqual(reactor.tcpClients[0][1], 9000)
        self.assertEqual(client.state, E.CONNECTING)

    def test_wrong_password_fails(self) -> None:
        """A refused login fails and starts nothing."""
        from dim import errors
        client, reactor, _, _ = self.make()
        self.failureResultOf(client.login("alice", "nope"), errors.Unauthorized)
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(client.state, E.OFFLINE)

    def test_resume_uses_saved_token(self) -> None:
        """resume starts a session from a saved token without a password."""
        client, reactor, config, _ = self.make()
        self.assertFalse(client.resume())
        config.remember("http://gw", "alice")
        config.save_token("http://gw", "alice", "T")
        self.assertTrue(client.resume())
        self.assertEqual(client.session.token, "T")
        self.assertEqual(len(reactor.tcpClients), 1)

    def test_history_fetches_the_conversation_page(self) -> None:
        """history asks GET /v1/messages for one conversation's page below before_seq,
        caches it, then reads the cache."""
        client, reactor, _, gateway = self.make()
        self.successResultOf(client.login("alice", "secret123"))
        got = self.successResultOf(client.history("bob", before_seq=6, limit=3))
        self.assertEqual([x.seq for x in got], [3, 4, 5])
        self.assertEqual(gateway.pages, [{"with": "bob", "before": 6, "limit": 3}])
        assert client.cache is not None
        self.assertEqual([m.seq for m in client.cache.history("bob", None, 10)], [3, 4, 5])


def change(seq: int, kind: str, ref: str, sender: str = "bob", body: str = "",
           on: bool | None = None, ts: int | None = None) -> ChatMessage:
    """An edit, recall or reaction entry at ``seq`` changing message ``ref``."""
    return ChatMessage(seq=seq, mid=f"m{seq}", id=f"c{seq}", sender=sender, to="alice",
                       ts=ts if ts is not None else seq * 1000, body=body, kind=kind, ref=ref,
                       on=on)


class ConversationStateTests(unittest.TestCase):
    """Replies, mentions, edits, recalls and reactions in the cache."""

    def test_from_frame_keeps_everything_of_part_3(self) -> None:
        """A msg frame and a listing item give the same message, reply, mentions and state
        included; a change entry keeps its ref and on."""
        from dim.protocol import frames as F
        frame = F.Msg(mid="m5", id="c5", from_="bob", ts=5, seq=5, body="hi @alice",
                      kind="text", group="g1", reply_to="m2", mentions=["alice"],
                      edited=9, reactions={"👍": ["carol"]}, delivered=True)
        got = ChatMessage.from_frame(frame)
        self.assertEqual((got.reply_to, got.mentions, got.edited, got.reactions, got.group),
                         ("m2", ["alice"], 9, {"👍": ["carol"]}, "g1"))
        self.assertTrue(got.delivered)
        self.assertFalse(got.recalled)
        self.assertEqual(ChatMessage.from_frame(frame.to_dict()), got)
        recalled = ChatMessage.from_frame({"seq": 6, "mid": "m6", "from": "bob", "body": "",
                                           "recalled": True, "kind": "file"})
        self.assertTrue(recalled.recalled)
        self.assertIsNone(recalled.file)
        reaction = ChatMessage.from_frame(F.Msg(mid="m7", id="c7", from_="bob", ts=7, seq=7,
                                                body="👍", kind="reaction", ref="m5", on=False))
        self.assertEqual((reaction.ref, reaction.on, reaction.is_change), ("m5", False, True))
        self.assertFalse(got.is_change)

    def test_reply_and_mentions_survive_the_cache(self) -> None:
        """reply_to and mentions are stored and read back, also after reopening."""
        path = os.path.join(self.mktemp(), "alice.sqlite3")
        cache = MessageCache(path, "alice")
        cache.put(m(1, reply_to="m0", mentions=["alice", "carol"]))
        cache.close()
        (got,) = MessageCache(path, "alice").history("bob")
        self.assertEqual((got.reply_to, got.mentions), ("m0", ["alice", "carol"]))

    def test_edit_recall_react_change_the_original(self) -> None:
        """Each change applies to the message it names and is not listed of its own; the
        conversation's newest message and unread count leave changes out."""
        cache = MessageCache(":memory:", "alice")
        cache.put(m(1))
        cache.put(m(2, sender="alice", to="bob"))
        cache.put_many([change(3, "edit", "m1", body="fixed"),
                        change(4, "reaction", "m2", body="👍", on=True),
                        change(5, "reaction", "m2", sender="alice", body="👍", on=True),
                        change(6, "reaction", "m2", sender="alice", body="🎉", on=True),
                        change(7, "reaction", "m2", sender="alice", body="🎉", on=False)])
        first, second = cache.history("bob")
        self.assertEqual((first.body, first.edited), ("fixed", 3000))
        self.assertEqual(second.reactions, {"👍": ["bob", "alice"]})
        self.assertEqual(cache.message("m1"), first)
        self.assertEqual([c.last_seq for c in cache.conversations()], [2])
        self.assertEqual(cache.conversations()[0].unread, 1)
        self.assertEqual(cache.first_missing(), 8)
        cache.put(change(8, "recall", "m1"))
        recalled = cache.message("m1")
        assert recalled is not None
        self.assertEqual((recalled.recalled, recalled.body), (True, ""))
        cache.put(change(9, "edit", "m1", body="too late"))
        self.assertEqual(cache.message("m1").body, "")  # type: ignore[union-attr]

    def test_changes_by_others_than_the_sender_do_not_edit(self) -> None:
        """An edit or recall by someone who did not send the message changes nothing; an
        older edit never replaces a newer one."""
        cache = MessageCache(":memory:", "alice")
        cache.put(m(1))
        cache.put_many([change(2, "edit", "m1", sender="alice", body="mine now"),
                        change(3, "recall", "m1", sender="carol"),
                        change(5, "edit", "m1", body="newer", ts=50_000),
                        change(6, "edit", "m1", body="older", ts=40_000)])
        got = cache.message("m1")
        assert got is not None
        self.assertEqual((got.body, got.recalled, got.edited), ("newer", False, 50_000))

    def test_a_recalled_file_is_gone(self) -> None:
        """Recalling a file message drops its file, so it is not offered for download."""
        cache = MessageCache(":memory:", "alice")
        cache.put(m(1, kind="file", file={"id": "f1", "name": "a.txt", "size": 3,
                                          "mime": "text/plain"}))
        cache.put(change(2, "recall", "m1"))
        got = cache.message("m1")
        assert got is not None
        self.assertIsNone(got.file)

    def test_change_before_its_message_applies_when_it_comes(self) -> None:
        """A change cached before the message it names (across a gap) applies once the
        message is cached, even from a listing older than the change."""
        cache = MessageCache(":memory:", "alice")
        cache.put_many([change(3, "edit", "m1", body="later text"),
                        change(4, "reaction", "m1", body="🎉", on=True)])
        self.assertIsNone(cache.message("m1"))
        cache.put(m(1))
        got = cache.message("m1")
        assert got is not None
        self.assertEqual((got.body, got.reactions), ("later text", {"🎉": ["bob"]}))

    def test_listing_of_a_known_message_brings_its_state(self) -> None:
        """A listing of a cached message with a newer edit, a recall or reactions updates it;
        a listing without them changes nothing."""
        cache = MessageCache(":memory:", "alice")
        cache.put(m(1))
        cache.put(m(1))
        self.assertEqual(cache.message("m1").body, "body 1")  # type: ignore[union-attr]
        cache.put(m(1, body="edited elsewhere", edited=7000, reactions={"👀": ["carol"]}))
        got = cache.message("m1")
        assert got is not None
        self.assertEqual((got.body, got.edited, got.reactions),
                         ("edited elsewhere", 7000, {"👀": ["carol"]}))
        cache.put(m(1, body="", recalled=True))
        self.assertTrue(cache.message("m1").recalled)  # type: ignore[union-attr]

    def test_a_cache_of_an_older_client_is_upgraded(self) -> None:
        """A cache file without the newer columns opens, keeps its messages and takes
        replies and changes from then on."""
        import sqlite3
        path = os.path.join(self.mktemp(), "alice.sqlite3")
        os.makedirs(os.path.dirname(path))
        db = sqlite3.connect(path)
        db.executescript(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, mid TEXT NOT NULL, id TEXT NOT NULL,"
            " sender TEXT NOT NULL, ts INTEGER NOT NULL, to_user TEXT, grp TEXT,"
            " body TEXT NOT NULL, kind TEXT NOT NULL, delivered INTEGER NOT NULL DEFAULT 0,"
            " read INTEGER NOT NULL DEFAULT 0, peer TEXT NOT NULL);"
            "INSERT INTO messages VALUES (1, 'm1', 'c1', 'bob', 1, 'alice', NULL, 'old', 'text',"
            " 0, 0, 'bob');")
        db.close()
        cache = MessageCache(path, "alice")
        cache.put_many([m(2, reply_to="m1"), change(3, "edit", "m1", body="new")])
        first, second = cache.history("bob")
        self.assertEqual((first.body, first.file, second.reply_to), ("new", None, "m1"))


class FakeChangeSession:
    """The session's part 3 writes, answered as the node would (or refused)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.refuse: Exception | None = None
        self.seq = 10

    def _sent(self, *call: object) -> defer.Deferred[object]:
        self.calls.append(call)
        if self.refuse is not None:
            return defer.fail(self.refuse)
        self.seq += 1
        from types import SimpleNamespace
        return defer.succeed(SimpleNamespace(id=f"x{self.seq}", mid=f"m{self.seq}",
                                             seq=self.seq, ts=self.seq * 1000))

    def edit(self, mid: str, body: str) -> defer.Deferred[object]:
        """An edit frame."""
        return self._sent("edit", mid, body)

    def recall(self, mid: str) -> defer.Deferred[object]:
        """A recall frame."""
        return self._sent("recall", mid)

    def react(self, mid: str, emoji: str, on: bool = True) -> defer.Deferred[object]:
        """A react frame."""
        return self._sent("react", mid, emoji, on)


class ChatClientChangeTests(unittest.TestCase):
    """ChatClient's edit, recall, react and message."""

    def make(self) -> tuple[C.ChatClient, FakeChangeSession, list[object]]:
        """A ChatClient of alice with a cache holding her message m1 to bob and bob's m2."""
        client = C.ChatClient(FakeLoginGateway(), MemoryReactorClock(),  # type: ignore[arg-type]
                              cache_factory=None)
        client.user = "alice"
        client.cache = MessageCache(":memory:", "alice")
        client.cache.put_many([m(1, sender="alice", to="bob"), m(2)])
        session = FakeChangeSession()
        client.session = session  # type: ignore[assignment]
        seen: list[object] = []
        client.subscribe(seen.append)
        return client, session, seen

    def test_edit_recall_react_change_the_cache_and_tell(self) -> None:
        """Once the node stored a change, message() shows it and listeners hear
        MessageChanged with the message in its new state."""
        client, session, seen = self.make()
        self.successResultOf(client.edit("m1", "better"))
        self.successResultOf(client.react("m2", "👍"))
        self.assertEqual(session.calls, [("edit", "m1", "better"), ("react", "m2", "👍", True)])
        self.assertEqual(client.message("m1").body, "better")  # type: ignore[union-attr]
        self.assertEqual(client.message("m2").reactions,  # type: ignore[union-attr]
                         {"👍": ["alice"]})
        changed = [e for e in seen if isinstance(e, E.MessageChanged)]
        self.assertEqual([(c.message.mid, c.change.kind) for c in changed],
                         [("m1", "edit"), ("m2", "reaction")])
        self.assertEqual(changed[1].change.peer("alice"), "bob")
        self.successResultOf(client.react("m2", "👍", on=False))
        self.assertIsNone(client.message("m2").reactions)  # type: ignore[union-attr]
        self.successResultOf(client.recall("m1"))
        self.assertTrue(client.message("m1").recalled)  # type: ignore[union-attr]
        self.assertEqual([x.mid for x in client.cache.history("bob")], ["m1", "m2"])  # type: ignore[union-attr]

    def test_a_refused_change_changes_nothing(self) -> None:
        """A change the node refuses fails with its error and leaves the message alone."""
        from dim import errors
        client, session, seen = self.make()
        session.refuse = errors.Forbidden("not yours")
        self.failureResultOf(client.edit("m2", "hijacked"), errors.Forbidden)
        self.assertEqual(client.message("m2").body, "body 2")  # type: ignore[union-attr]
        self.assertEqual([e for e in seen if isinstance(e, E.MessageChanged)], [])

    def test_not_logged_in_fails(self) -> None:
        """Without a session, a change fails at once (as a Deferred) and message() is None."""
        from dim import errors
        client = C.ChatClient(FakeLoginGateway(), MemoryReactorClock(),  # type: ignore[arg-type]
                              cache_factory=None)
        self.failureResultOf(client.recall("m1"), errors.Unauthorized)
        self.assertIsNone(client.message("m1"))

    def test_changes_received_are_told_as_changed_messages(self) -> None:
        """A reaction entry the session received is relayed, then told as MessageChanged of
        the message it names; one naming an unknown message is only relayed."""
        client, _, seen = self.make()
        entry = change(11, "reaction", "m1", body="🎉", on=True)
        assert client.cache is not None
        client.cache.put(entry)
        client._relay(E.MessageReceived(entry))
        lost = change(12, "edit", "m404", body="?")
        client.cache.put(lost)
        client._relay(E.MessageReceived(lost))
        self.assertEqual([type(e).__name__ for e in seen],
                         ["MessageReceived", "MessageChanged", "MessageReceived"])
        self.assertEqual(seen[1].message.reactions, {"🎉": ["bob"]})  # type: ignore[attr-defined]


class ChatClientOverTheWireTests(unittest.TestCase):
    """ChatClient's changes through a real ClientSession, the node played by the test."""

    def test_edit_and_reaction_frames_and_their_sent(self) -> None:
        """edit and react write their frames; each node's sent fires the Deferred, caches
        the change and tells MessageChanged; a refusal with the frame's ref fails it and
        changes nothing; an incoming recall is applied from its msg frame."""
        from dim import errors
        from dim.protocol import frames as F
        from tests.fakes.client import NodeSide, msg
        client = C.ChatClient(FakeLoginGateway(), MemoryReactorClock(),  # type: ignore[arg-type]
                              cache_factory=lambda url, user: MessageCache(":memory:", user))
        reactor = client.reactor
        self.successResultOf(client.login("alice", "secret123"))
        node = NodeSide(reactor)
        node.welcome()
        seen: list[object] = []
        client.subscribe(seen.append)
        node.send(msg(1, body="lunch?"), msg(2, sender="alice", to="bob", body="sure, 12"))
        node.received()
        edited = client.edit("m2", "sure, 12:30")
        reacted = client.react("m1", "👍")
        edit, react = node.received()
        assert isinstance(edit, F.Edit) and isinstance(react, F.React)
        self.assertEqual((edit.mid, edit.body, react.mid, react.emoji, react.on),
                         ("m2", "sure, 12:30", "m1", "👍", True))
        node.send(F.Sent(id=edit.id, mid="m3", seq=3, ts=3000),
                  F.Error(code="forbidden", message="no", ref=react.id))
        self.assertEqual(self.successResultOf(edited).seq, 3)
        self.failureResultOf(reacted, errors.Forbidden)
        assert client.cache is not None
        self.assertEqual(client.message("m2").body, "sure, 12:30")  # type: ignore[union-attr]
        self.assertIsNone(client.message("m1").reactions)  # type: ignore[union-attr]
        self.assertEqual(client.cache.first_missing(), 4)
        node.send(msg(4, body="", kind="recall", ref="m1"))
        changed = [e for e in seen if isinstance(e, E.MessageChanged)]
        self.assertEqual([(c.message.mid, c.change.kind) for c in changed],
                         [("m2", "edit"), ("m1", "recall")])
        self.assertTrue(changed[1].message.recalled)
        self.assertEqual([x.mid for x in client.cache.history("bob")], ["m1", "m2"])
