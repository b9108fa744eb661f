"""A big inbox for the ``big_inbox`` scenario: what it holds, and filling it through a store.

One user (:data:`OWNER`) gets ``entries`` inbox entries over many conversations: direct
messages from and to :data:`PEERS` peers and messages in :data:`GROUPS` groups of five, in
English and Chinese.  The bodies are drawn from a seeded generator, so every run holds the
same inbox, and :func:`plan` knows how many entries each search of :data:`QUERIES` finds.

The inbox is filled straight through the store's API (:meth:`dim.store.interface.IStore.apply`,
in batches), the way the node stores messages but without the network, so 100,000 entries
take seconds instead of the hours a real sender would need under the rate limits.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dim.store.interface import SendOp

#: The user whose inbox is filled and measured.
OWNER = "big"
#: How many peers write to the owner directly, and how many groups of five it is in.
PEERS = 200
GROUPS = 40
GROUP_SIZE = 5

#: The searches the scenario times: (what it shows, the query).
QUERIES: list[tuple[str, str]] = [
    ("common word", "hello"),
    ("rare 6-letter word", "zephyr"),
    ("CJK word of 3 characters", "图书馆"),
    ("1 CJK character", "好"),
    ("2 letters, no match", "qx"),
]

#: Where the rare word goes: this many entries, spread over the inbox (oldest to newest).
RARE_COUNT = 5

_WORDS = ["the", "a", "to", "and", "we", "you", "it", "meeting", "tomorrow", "lunch", "report",
          "deploy", "build", "review", "team", "project", "deadline", "coffee", "weather",
          "train", "ticket", "photo", "music", "weekend", "plan", "budget", "draft", "server",
          "client", "release", "notes", "office", "call", "later", "today", "thanks", "sure",
          "maybe", "great", "idea", "agenda", "slide", "demo", "update", "bug", "fix", "test",
          "green", "ready", "shipping"]
_CJK = ["今天天气很好", "我们明天开会", "你好吗", "周末去爬山吧", "这个报告写完了",
        "晚上一起吃饭", "谢谢你的帮助", "好的没问题", "下午三点见", "项目进展顺利"]


def peer(i: int) -> str:
    """The name of peer ``i``."""
    return f"peer{i}"


@dataclass
class Plan:
    """What one fill writes: the sends in order, and what the owner's inbox then holds."""

    ops: list[SendOp] = field(default_factory=list)
    #: Per query: how many of the owner's entries contain it (case-insensitive).
    hits: dict[str, int] = field(default_factory=dict)
    direct: int = 0
    group: int = 0
    cjk: int = 0


def _body(rng: random.Random, i: int, entries: int) -> str:
    """One message body: mostly English words, a fifth Chinese, some with the searched
    words."""
    if rng.random() < 0.2:
        text = rng.choice(_CJK)
        if rng.random() < 0.05:
            text += "\uff0c在图书馆"  # a full-width comma, then "at the library"
    else:
        words = rng.choices(_WORDS, k=rng.randint(4, 12))
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words) + 1), "Hello")
        text = " ".join(words)
    if entries >= RARE_COUNT and i % (entries // RARE_COUNT) == entries // (2 * RARE_COUNT):
        text += " zephyr"
    return text


def plan(entries: int, groups: list[str], seed: int = 13) -> Plan:
    """The sends that give the owner ``entries`` inbox entries: 60% direct messages from
    peers, 10% from the owner to peers, 30% group messages (``groups``: the group ids, made
    by :func:`group_members` order), one entry of the owner's inbox each."""
    rng = random.Random(seed)
    out = Plan(hits={q: 0 for _, q in QUERIES})
    for i in range(entries):
        body = _body(rng, i, entries)
        kind = i % 10
        if kind < 6:
            op = SendOp(sender=peer(rng.randrange(PEERS)), client_id=f"f{i}",
                        recipients=[OWNER], body=body, ts=1_700_000_000_000 + i)
            out.direct += 1
        elif kind == 6:
            op = SendOp(sender=OWNER, client_id=f"f{i}", recipients=[peer(rng.randrange(PEERS))],
                        body=body, ts=1_700_000_000_000 + i)
            out.direct += 1
        else:
            g = rng.randrange(len(groups))
            members = group_members(g)
            sender = rng.choice(members)
            op = SendOp(sender=sender, client_id=f"f{i}",
                        recipients=[m for m in members if m != sender], group=groups[g],
                        body=body, ts=1_700_000_000_000 + i)
            out.group += 1
        out.ops.append(op)
        folded = body.casefold()
        out.cjk += any("\u4e00" <= ch <= "\u9fff" for ch in body)
        for _, q in QUERIES:
            out.hits[q] += q.casefold() in folded
    return out


def group_members(g: int) -> list[str]:
    """The members of group ``g``: the owner and four peers."""
    return [OWNER] + [peer((g * (GROUP_SIZE - 1) + k) % PEERS) for k in range(GROUP_SIZE - 1)]


def users() -> list[str]:
    """Every user of the big inbox."""
    return [OWNER] + [peer(i) for i in range(PEERS)]


def batches(ops: list[SendOp], size: int) -> Iterator[list[SendOp]]:
    """``ops`` in lists of at most ``size``."""
    for start in range(0, len(ops), size):
        yield ops[start:start + size]


async def fill(store: Any, entries: int, password_hash: str, batch: int = 500,
               in_flight: int = 4) -> dict[str, Any]:
    """Create the users and groups and store the plan's messages through ``store.apply``, a
    batch at a time with up to ``in_flight`` batches waiting; what was written."""
    from twisted.internet import defer

    for user in users():
        await store.create_user(user, password_hash, 1_700_000_000_000)
    groups = []
    for g in range(GROUPS):
        members = group_members(g)
        made = await store.create_group(members[0], f"group {g}", members[1:],
                                        1_700_000_000_000)
        groups.append(made.id)
    todo = plan(entries, groups)
    waiting: list[defer.Deferred[list[Any]]] = []
    failed = 0
    for ops in batches(todo.ops, batch):
        waiting.append(store.apply(ops))
        if len(waiting) >= in_flight:
            failed += _failures(await waiting.pop(0))
    for d in waiting:
        failed += _failures(await d)
    last = await store.last_seq(OWNER)
    return {"entries": last, "messages": len(todo.ops), "failed": failed,
            "direct": todo.direct, "group": todo.group, "cjk": todo.cjk,
            "conversations": len(await store.conversations(OWNER, 1000)),
            "hits": todo.hits}


def _failures(outcomes: list[Any]) -> int:
    """How many outcomes of one apply are failures."""
    from twisted.python.failure import Failure
    return sum(isinstance(o, (Failure, Exception)) for o in outcomes)
