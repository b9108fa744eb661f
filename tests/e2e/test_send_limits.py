"""``twistd dim`` with its default per-user limits: a send flood is refused, nothing of it is
stored, and another user chats on."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from tests.harness import EmbeddedDim, WireClient, register_and_login


class SendFloodTests(unittest.TestCase):
    """2,000 sends at once from one user: most get rate_limited; the rest is as usual."""

    timeout = 120

    @defer.inlineCallbacks
    def test_flood_refused_others_unaffected(self):  # type: ignore[no-untyped-def]
        """rate_limited with ref and retry_after for the excess, only answered sends stored,
        and carol's message to bob goes through meanwhile."""
        dim = EmbeddedDim(Path(self.mktemp()).resolve())
        dim.start()
        self.addCleanup(dim.process.kill)
        logins = {}
        for user in ("alice20", "bob20", "carol20"):
            logins[user] = yield register_and_login(dim.base, user)
        alice = yield WireClient.login("127.0.0.1", dim.node_port, logins["alice20"]["token"])
        carol = yield WireClient.login("127.0.0.1", dim.node_port, logins["carol20"]["token"])
        flood = b"".join(
            struct.pack(">I", len(p)) + p
            for p in (json.dumps({"type": "send", "id": f"f{i}", "to": "bob20",
                                  "body": f"flood {i}"}).encode() for i in range(2000)))
        alice.proto.transport.write(flood)
        carol.send({"type": "send", "id": "c1", "to": "bob20", "body": "still here"})
        yield carol.expect("sent", id="c1")
        last = yield alice.expect("error", ref="f1999")
        # Refusals are answered at once; the admitted sends' `sent` follow their store batch,
        # so wait for the `sent` of every send that was not refused.
        refused = alice.take("error") + [last]
        refused_ids = {e["ref"] for e in refused}
        sent = []
        for i in range(2000):
            if f"f{i}" not in refused_ids:
                answer = yield alice.expect("sent", id=f"f{i}")
                sent.append(answer)
        self.assertEqual(len(sent) + len(refused), 2000)
        self.assertGreater(len(refused), 1500)
        self.assertEqual({e["code"] for e in refused}, {"rate_limited"})
        self.assertTrue(all(0 < e["retry_after"] <= 1 for e in refused))

        bob = yield WireClient.login("127.0.0.1", dim.node_port, logins["bob20"]["token"])
        self.assertEqual(bob.welcome["last_seq"], len(sent) + 1)  # alice's, and carol's
        bob.send({"type": "sync", "after": 0, "limit": 1000})
        yield bob.expect("synced")
        stored = [f["id"] for f in bob.take("msg") if f["from"] == "alice20"]
        self.assertEqual(set(stored), {f["id"] for f in sent} | {"f0"})
        for client in (alice, bob, carol):
            yield client.close()
        self.assertNotIn("Traceback", dim.process.log.read_text())
