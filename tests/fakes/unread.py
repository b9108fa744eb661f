"""The unread agreement run shared by the embedded and the cluster tests: two devices of one
user show the server's unread and mention counts after any sequence of messages and of reads,
whole or part way, on either device."""
from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer

from dim.client import events as E
from dim.client.gateway import GatewayClient
from dim.client.unread import peer_of
from tests.harness import sleep
from tests.fakes.client import PASSWORD, LiveChat, _Anything

#: How many random steps the agreement test takes.
STEPS = 60

def counts_of(chat: LiveChat) -> dict[str, tuple[int, int]]:
    """A device's ``{conversation: (unread, mentions)}``, zeros left out."""
    return {c.peer: (c.unread, c.mentions) for c in chat.client.conversations()
            if c.unread or c.mentions}


class UnreadAgreement:
    """The agreement run, for any DIM: a subclass gives ``base`` (the gateway's URL) and
    ``chat(user, register, device)``; ``assert*`` come from the TestCase it also is."""

    base: str

    def chat(self, user: str, register: bool = True, device: str = "test") -> Any:
        """A Deferred of a connected LiveChat, stopped at the end of the test."""
        raise NotImplementedError

    def devices_ready(self, laptop: LiveChat, phone: LiveChat) -> None:
        """Check where bob's two devices connected (anywhere, unless a subclass cares)."""

    @defer.inlineCallbacks
    def server_counts(self, gateway: GatewayClient):  # type: ignore[no-untyped-def]
        """bob's ``{conversation: (unread, mentions)}`` as the server computes it."""
        answer = yield gateway.conversations(limit=200)
        found: dict[str, tuple[int, int]] = {}
        for item in answer["conversations"]:
            peer = peer_of(item)
            if peer is not None and (item["unread"] or item["mentions"]):
                found[peer] = (item["unread"], item["mentions"])
        return found

    @defer.inlineCallbacks
    def agree(self, gateway: GatewayClient, devices: list[LiveChat], what: str,
              timeout: float = 15.0):  # type: ignore[no-untyped-def]
        """Wait until every device shows the server's counts; the counts."""
        server: dict[str, tuple[int, int]] = {}
        for _ in range(int(timeout / 0.1)):
            server = yield self.server_counts(gateway)
            if all(counts_of(d) == server for d in devices):
                return server
            yield sleep(0.1)
        raise AssertionError(f"not within {timeout} s after {what}: server {server}, "
                             + ", ".join(f"{d.client.device} {counts_of(d)}" for d in devices))

    @defer.inlineCallbacks
    def test_two_devices_agree_after_any_reads(self):  # type: ignore[no-untyped-def]
        """Random messages (some mentioning bob, some his own from either device) and reads
        of one conversation on either device, up to the newest or part way: after every
        step both devices show the server's unread and mention counts; a device that logs
        in afterwards shows them too."""
        alice = yield self.chat("alice")
        carol = yield self.chat("carol")
        laptop = yield self.chat("bob", device="laptop")
        phone = yield self.chat("bob", register=False, device="phone")
        self.devices_ready(laptop, phone)
        gateway = GatewayClient(self.base,
                                request_options={"persistent": False, "timeout": 20})
        yield gateway.login("bob", PASSWORD)
        group = yield alice.client.create_group("team", ["bob", "carol"])
        team = "#" + group["id"]
        yield self.agree(gateway, [laptop, phone], "the group was made")
        rng = random.Random(13)
        devices = {"laptop": laptop, "phone": phone}
        reads = partial = 0
        for step in range(STEPS):
            roll = rng.random()
            if roll < 0.5 or step < 6:
                sender = rng.choice([alice, carol])
                body = f"step {step} from {sender.user}"
                if rng.random() < 0.5:
                    mentions = ["bob"] if rng.random() < 0.5 else ["carol", "alice"]
                    sender.client.send(team, body, mentions=mentions)
                else:
                    sender.client.send("bob", body)
                for device in devices.values():
                    yield device.wait_for(E.MessageReceived, entry=_Anything(body=body))
                what = f"step {step}: {sender.user} wrote"
            elif roll < 0.6:
                name = rng.choice(sorted(devices))
                body = f"step {step} from bob's {name}"
                devices[name].client.send(rng.choice(["alice", team]), body)
                other = phone if name == "laptop" else laptop
                yield other.wait_for(E.MessageReceived, entry=_Anything(body=body))
                what = f"step {step}: bob wrote from the {name}"
            else:
                name = rng.choice(sorted(devices))
                device = devices[name]
                peer = rng.choice(["alice", "carol", team])
                assert device.client.cache is not None
                seqs = [m.seq for m in device.client.cache.history(peer, None, 1000)]
                if not seqs:
                    continue
                upto = rng.choice(seqs[:-1]) if len(seqs) > 1 and rng.random() < 0.5 \
                    else seqs[-1]
                if device.client.mark_read(peer, upto):
                    reads += 1
                    partial += upto != seqs[-1]
                what = f"step {step}: the {name} read {peer} up to {upto}"
            yield self.agree(gateway, [laptop, phone], what)
        self.assertGreater(reads, 3)
        self.assertGreater(partial, 0)
        final = yield self.agree(gateway, [laptop, phone], "the last step")
        later = yield self.chat("bob", register=False, device="later")
        yield self.agree(gateway, [laptop, phone, later], "another device logged in")
        self.assertEqual(counts_of(later), final)

    @defer.inlineCallbacks
    def until(self, check: Any, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
        """Poll ``check()`` until it is true."""
        for _ in range(int(timeout / 0.05)):
            if check():
                return
            yield sleep(0.05)
        raise AssertionError(f"not within {timeout} s: {what}")
