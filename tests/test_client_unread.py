"""ConversationBook: the server's unread and mention counts per conversation, kept live from
messages and read marks, fetched again after a reconnect, and never counting a message twice
however a fetch and live events interleave."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from dim import errors
from dim.client import chat as C
from dim.client.cache import ChatMessage, MessageCache
from dim.client.conversations import ConversationReadUpTo
from dim.client.unread import ConversationBook, REFRESH_DELAY, UnreadChanged
from dim.protocol import frames as F
from tests.fakes.client import NodeSide, msg


def entry(seq: int, sender: str = "bob", *, to: str | None = "alice", group: str | None = None,
          kind: str = "text", mentions: list[str] | None = None) -> ChatMessage:
    """An inbox entry of alice's at ``seq``."""
    return ChatMessage(seq=seq, mid=f"m{seq}", id=f"c{seq}", sender=sender,
                       to=None if group else to, group=group, ts=seq * 1000, body=f"b{seq}",
                       kind=kind, mentions=mentions)


def item(peer: str, last: int, read: int, unread: int, mentions: int = 0) -> dict[str, Any]:
    """One ``GET /v1/conversations`` item."""
    named = {"group": peer[1:]} if peer.startswith("#") else {"with": peer}
    return {**named, "last": {"seq": last, "mid": f"m{last}", "ts": last * 1000, "body": "x"},
            "read_seq": read, "unread": unread, "mentions": mentions}


class ConversationsGateway:
    """Answers ``conversations`` with Deferreds the test fires, recording each call."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[dict[str, Any]]] = []
        self.limits: list[int] = []

    def conversations(self, limit: int = 50) -> defer.Deferred[dict[str, Any]]:
        self.limits.append(limit)
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.pending.append(d)
        return d

    def answer(self, *items: dict[str, Any]) -> None:
        """Answer the oldest call still waiting."""
        self.pending.pop(0).callback({"conversations": list(items)})


class BookTests(unittest.TestCase):
    """Counts from the server, kept live."""

    def book(self, cache: MessageCache | None = None) -> tuple[ConversationBook,
                                                              ConversationsGateway, task.Clock,
                                                              list[None]]:
        """A book for alice, with its gateway, clock and a record of change calls."""
        gateway, clock, changes = ConversationsGateway(), task.Clock(), []
        book = ConversationBook(gateway, "alice", clock, cache=cache,
                                on_change=lambda: changes.append(None))
        return book, gateway, clock, changes

    def counts(self, book: ConversationBook) -> dict[str, tuple[int, int, int]]:
        """``{peer: (unread, mentions, read_seq)}``."""
        return {c.peer: (c.unread, c.mentions, c.read_seq) for c in book.conversations()}

    def test_fetched_counts_newest_first(self) -> None:
        """A fetch gives each conversation's counts and read pointer, most recent first."""
        book, gateway, clock, changes = self.book()
        d = book.refresh()
        self.assertFalse(book.loaded)
        gateway.answer(item("#g1", 9, 4, 3, 2), item("bob", 7, 7, 0))
        self.assertIs(self.successResultOf(d), True)
        self.assertTrue(book.loaded)
        self.assertEqual([c.peer for c in book.conversations()], ["#g1", "bob"])
        self.assertEqual(self.counts(book), {"#g1": (3, 2, 4), "bob": (0, 0, 7)})
        self.assertEqual(gateway.limits, [200])
        self.assertEqual(len(changes), 1)

    def test_live_messages_count_once(self) -> None:
        """A message from someone else above the pointer counts once; one's own, a reaction
        or an edit never; a mention of alice counts as a mention too."""
        book, gateway, clock, changes = self.book()
        book.refresh()
        gateway.answer(item("#g1", 9, 9, 0))
        book.message(entry(10, "bob", group="g1", mentions=["alice", "carol"]))
        book.message(entry(10, "bob", group="g1", mentions=["alice"]))  # the same seq again
        book.message(entry(11, "carol", group="g1", mentions=["carol"]))
        book.message(entry(12, "alice", group="g1"))
        book.message(entry(13, "bob", group="g1", kind="reaction"))
        book.message(entry(14, "bob", group="g1", kind="edit"))
        book.message(entry(15, "carol", to="alice"))
        self.assertEqual(self.counts(book), {"#g1": (2, 1, 9), "carol": (1, 0, 0)})
        self.assertEqual([c.peer for c in book.conversations()], ["carol", "#g1"])
        self.assertEqual(book.counts("#g1").last_seq, 14)

    def test_message_at_or_below_fetched_last_is_not_counted_again(self) -> None:
        """A message the server already counted (a sync replaying it) adds nothing."""
        book, gateway, clock, changes = self.book()
        book.refresh()
        gateway.answer(item("bob", 5, 2, 3))
        book.message(entry(4))
        book.message(entry(5))
        self.assertEqual(self.counts(book), {"bob": (3, 0, 2)})
        book.message(entry(6))
        self.assertEqual(self.counts(book), {"bob": (4, 0, 2)})

    def test_read_from_another_device_clears_at_once(self) -> None:
        """A read echo up to the newest clears counts, fetched and live, with no fetch."""
        book, gateway, clock, changes = self.book()
        book.refresh()
        gateway.answer(item("#g1", 5, 1, 4, 2))
        book.message(entry(6, "carol", group="g1", mentions=["alice"]))
        self.assertEqual(self.counts(book)["#g1"], (5, 3, 1))
        self.assertTrue(book.read("#g1", 6))
        self.assertEqual(self.counts(book)["#g1"], (0, 0, 6))
        self.assertFalse(book.read("#g1", 6))  # not again
        self.assertFalse(book.read("#g1", 3))  # never back
        clock.advance(REFRESH_DELAY * 4)
        self.assertEqual(gateway.pending, [])

    def test_read_part_way_counts_from_the_cache_then_asks_the_server(self) -> None:
        """A pointer stopping inside the fetched unread ones clears what the cache shows
        below it at once, live ones above it stay, and one fetch makes it exact."""
        cache = MessageCache(":memory:", "alice")
        cache.put_many([entry(2), entry(3, mentions=["alice"]), entry(4, "alice", to="bob"),
                        entry(5), entry(6)])
        book, gateway, clock, changes = self.book(cache)
        book.refresh()
        gateway.answer(item("bob", 6, 1, 4, 1))
        book.message(entry(7))
        self.assertTrue(book.read("bob", 4))
        self.assertEqual(self.counts(book)["bob"], (3, 0, 4))  # 5, 6 fetched; 7 live
        self.assertEqual(gateway.pending, [])
        book.read("bob", 5)  # a second part-way read joins the same fetch
        clock.advance(REFRESH_DELAY)
        self.assertEqual(len(gateway.pending), 1)
        gateway.answer(item("bob", 7, 5, 2))
        self.assertEqual(self.counts(book)["bob"], (2, 0, 5))
        clock.advance(REFRESH_DELAY * 4)
        self.assertEqual(gateway.pending, [])

    def test_events_during_a_fetch(self) -> None:
        """Messages and reads that arrive while a fetch is under way apply to its answer:
        those the server counted are not counted again, later ones are."""
        book, gateway, clock, changes = self.book()
        book.refresh()
        book.message(entry(3))  # stored before the server answered: in its count
        book.message(entry(4))  # stored after: not in it
        book.read("carol", 2)
        gateway.answer(item("bob", 3, 0, 3), item("carol", 2, 0, 1))
        self.assertEqual(self.counts(book), {"bob": (4, 0, 0), "carol": (0, 0, 2)})

    def test_own_mark_survives_an_answer_from_before_it(self) -> None:
        """A fetch the server answered before it took this device's read still shows the
        mark, without asking again and again."""
        book, gateway, clock, changes = self.book()
        book.refresh()
        gateway.answer(item("bob", 3, 0, 3))
        self.assertTrue(book.mark_read("bob", 3))
        self.assertFalse(book.mark_read("bob", 2))
        self.assertFalse(book.mark_read("bob", 3))
        book.refresh()
        gateway.answer(item("bob", 3, 0, 3))  # the read frame had not reached the node
        self.assertEqual(self.counts(book)["bob"], (0, 0, 3))
        self.assertEqual(book.read_seq("bob"), 3)
        clock.advance(REFRESH_DELAY * 4)
        self.assertEqual(gateway.pending, [])

    def test_refresh_while_fetching_fetches_once_more(self) -> None:
        """Refreshes asked for during a fetch make one more fetch after it; all callers
        hear when the newest state is in."""
        book, gateway, clock, changes = self.book()
        first = book.refresh()
        second = book.refresh()
        third = book.refresh()
        gateway.answer(item("bob", 1, 0, 1))
        self.assertNoResult(first)
        self.assertEqual(len(gateway.pending), 1)
        gateway.answer(item("bob", 2, 0, 2))
        for d in (first, second, third):
            self.assertIs(self.successResultOf(d), True)
        self.assertEqual(self.counts(book), {"bob": (2, 0, 0)})

    def test_failed_fetch_keeps_live_counts(self) -> None:
        """A fetch that fails keeps what was counted live and says False."""
        book, gateway, clock, changes = self.book()
        d = book.refresh()
        book.message(entry(1))
        gateway.pending.pop(0).errback(errors.Unavailable("gateway down"))
        self.assertIs(self.successResultOf(d), False)
        self.assertFalse(book.loaded)
        self.assertEqual(self.counts(book), {"bob": (1, 0, 0)})

    def test_stop_abandons_the_fetch_in_flight(self) -> None:
        """stop cancels a fetch under way (and the one asked for after it); the counts
        known stay and callers hear False."""
        book, gateway, clock, changes = self.book()
        book.message(entry(1))
        d = book.refresh()
        book.refresh()
        book.stop()
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(len(gateway.pending), 1)
        self.assertTrue(gateway.pending[0].called)  # cancelled: nothing waits for it
        self.assertFalse(book.loaded)
        self.assertEqual(self.counts(book), {"bob": (1, 0, 0)})

    def test_refresh_soon_joins_calls_and_stop_cancels(self) -> None:
        """refresh_soon fetches once for a burst of calls; stop cancels one waiting."""
        book, gateway, clock, changes = self.book()
        book.refresh_soon()
        book.refresh_soon()
        clock.advance(REFRESH_DELAY)
        self.assertEqual(len(gateway.pending), 1)
        gateway.answer()
        book.refresh_soon()
        book.stop()
        clock.advance(REFRESH_DELAY * 4)
        self.assertEqual(gateway.pending, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class ChatClientCountsTests(unittest.TestCase):
    """ChatClient keeps its book from the session's events and tells the node of marks."""

    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock
        self.reactor = MemoryReactorClock()
        self.gateway = BookGateway()
        self.chat = C.ChatClient(self.gateway, self.reactor,  # type: ignore[arg-type]
                                 cache_factory=lambda url, user: MessageCache(":memory:", user))
        self.events: list[Any] = []
        self.chat.subscribe(self.events.append)
        self.chat._start("alice", "tok", {"id": "n1", "host": "127.0.0.1", "port": 9000})
        self.addCleanup(self.chat.stop)
        self.side = NodeSide(self.reactor)

    def test_counts_marks_and_echoes(self) -> None:
        """Connected fetches counts; messages add to them; mark_read sends a conversation
        read and clears; another device's read clears; the list shows the mentions."""
        self.gateway.answers.append([item("#g1", 2, 0, 2, 1)])
        self.side.welcome()
        self.assertEqual([(c.peer, c.unread, c.mentions) for c in self.chat.conversations()],
                         [("#g1", 2, 1)])
        self.side.send(msg(1, body="m1", group="g1", to=None), msg(2, group="g1", to=None),
                       msg(3, sender="bob"))
        self.side.received()
        self.assertEqual({c.peer: c.unread for c in self.chat.conversations()},
                         {"#g1": 2, "bob": 1})
        self.assertTrue(self.chat.mark_read("bob", 3))
        self.assertFalse(self.chat.mark_read("bob", 3))
        self.assertIn(F.Read(seq=3, with_="bob"), self.side.received())
        self.assertEqual({c.peer: c.unread for c in self.chat.conversations()},
                         {"#g1": 2, "bob": 0})
        self.side.send(F.ReadNotice(seq=2, by="alice", group="g1"))
        self.assertEqual({c.peer: (c.unread, c.mentions) for c in self.chat.conversations()},
                         {"#g1": (0, 0), "bob": (0, 0)})
        self.assertEqual(self.chat.read_seq("#g1"), 2)
        self.assertTrue(any(isinstance(e, UnreadChanged) for e in self.events))
        self.assertTrue(any(isinstance(e, ConversationReadUpTo) for e in self.events))

    def test_offline_falls_back_to_the_cache(self) -> None:
        """Before the server answered once, the cache's counts are shown."""
        self.side.welcome()
        self.side.send(msg(1, sender="bob", to="alice"))
        self.assertEqual([(c.peer, c.unread) for c in self.chat.conversations()], [("bob", 1)])
        self.assertFalse(self.chat.book.loaded)  # type: ignore[union-attr]

    def test_history_by_conversation_merges_into_the_cache(self) -> None:
        """history asks for one conversation's page (before a seq) and merges it into the
        cache, each seq once; offline it answers from the cache."""
        self.side.welcome()
        self.side.send(msg(5, sender="bob", to="alice"))
        self.gateway.pages.append({"messages": [
            {"seq": 2, "mid": "m2", "id": "c2", "from": "bob", "to": "alice", "ts": 2,
             "body": "two", "kind": "text"},
            {"seq": 5, "mid": "m5", "id": "c5", "from": "bob", "to": "alice", "ts": 5,
             "body": "hello", "kind": "text"}], "last_seq": 5, "more": False})
        page = self.successResultOf(self.chat.history("bob", None, 10))
        self.assertEqual([m.seq for m in page], [2, 5])
        self.assertEqual(self.gateway.asked[-1], ("bob", None, None, 10))
        self.gateway.pages.append(errors.Unavailable("down"))
        page = self.successResultOf(self.chat.history("#g1", 5, 10))
        self.assertEqual(page, [])
        self.assertEqual(self.gateway.asked[-1], (None, "g1", 5, 10))

    def test_search(self) -> None:
        """search asks the gateway and gives messages, cached for a jump."""
        self.side.welcome()
        self.gateway.found = [{"seq": 7, "mid": "m7", "id": "c7", "from": "bob",
                               "to": "alice", "ts": 7, "body": "find me", "kind": "text"}]
        found = self.successResultOf(self.chat.search("FIND", "bob"))
        self.assertEqual([(m.seq, m.body) for m in found], [(7, "find me")])
        self.assertEqual(self.gateway.searched, [("FIND", "bob", None, 20)])
        self.assertEqual(self.chat.cache.get(7).body, "find me")  # type: ignore[union-attr]


class BookGateway:
    """The gateway calls ChatClient makes, answered from lists."""

    def __init__(self) -> None:
        self.base_url = "http://gw.test"
        self.token: str | None = "tok"
        self.answers: list[list[dict[str, Any]]] = []
        self.pages: list[Any] = []
        self.asked: list[tuple[Any, ...]] = []
        self.found: list[dict[str, Any]] = []
        self.searched: list[tuple[Any, ...]] = []

    def route(self, exclude: Any = ()) -> defer.Deferred[dict[str, Any]]:
        return defer.fail(errors.Unavailable("no node"))

    def conversations(self, limit: int = 50) -> defer.Deferred[dict[str, Any]]:
        if not self.answers:
            return defer.fail(errors.Unavailable("gateway down"))
        return defer.succeed({"conversations": self.answers.pop(0)})

    def conversation_messages(self, with_: str | None = None, group: str | None = None,
                              before: int | None = None, after: int = 0,
                              limit: int = 100) -> defer.Deferred[dict[str, Any]]:
        self.asked.append((with_, group, before, limit))
        page = self.pages.pop(0)
        return defer.fail(page) if isinstance(page, Exception) else defer.succeed(page)

    def search_messages(self, text: str, with_: str | None = None, group: str | None = None,
                        limit: int = 20) -> defer.Deferred[dict[str, Any]]:
        self.searched.append((text, with_, group, limit))
        return defer.succeed({"messages": self.found})

    # what the roster asks when connected
    def contacts(self) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed({"contacts": []})

    def groups(self) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed({"groups": []})

    def profile(self) -> defer.Deferred[dict[str, Any]]:
        return defer.succeed({"user": "alice", "name": "alice", "status": "", "avatar": None})

