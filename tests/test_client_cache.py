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
    return ChatMessage(seq=seq, mid=f"m{seq}", id=f"c{seq}", sender=sender, to=to, ts=seq * 1000,
                       body=f"body {seq}", **kw)  # type: ignore[arg-type]


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
    """A gateway stand-in for ChatClient: login, route, messages."""

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

    def messages(self, after: int = 0, limit: int = 100) -> defer.Deferred[dict[str, object]]:
        """An inbox of six messages from bob, paged like the gateway."""
        self.pages.append({"after": after, "limit": limit})
        msgs = [{"seq": s, "mid": f"m{s}", "id": f"c{s}", "from": "bob", "to": "alice",
                 "ts": s, "body": f"old {s}"} for s in range(after + 1, min(after + limit, 6) + 1)]
        return defer.succeed({"messages": msgs, "last_seq": 6})


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

    def test_history_fetches_missing_from_gateway(self) -> None:
        """history fills gaps of the cache from GET /v1/messages, then reads the cache."""
        client, reactor, _, gateway = self.make()
        self.successResultOf(client.login("alice", "secret123"))
        got = self.successResultOf(client.history("bob", before_seq=6, limit=3))
        self.assertEqual([x.seq for x in got], [3, 4, 5])
        self.assertEqual(gateway.pages, [{"after": 0, "limit": 5}])
        self.successResultOf(client.history("bob", before_seq=6, limit=3))
        self.assertEqual(len(gateway.pages), 1)
