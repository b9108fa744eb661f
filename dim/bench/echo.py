"""The baseline: a bare Twisted ``Int32StringReceiver`` that echoes every frame it reads.

Run as its own process: ``python -m dim.bench.echo --port P [--interface 127.0.0.1]``.  It
prints ``listening PORT`` on stdout once it accepts connections.  It uses the same framing as
DIM (a 4-byte big-endian length, then the payload), so the same load generator drives both.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver

#: The listen backlog of the echo port (and of the DIM node port in the bench).
BACKLOG = 4096


class EchoReceiver(Int32StringReceiver):
    """Writes every frame it receives straight back."""

    MAX_LENGTH = 65536

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class EchoFactory(Factory):
    """Builds an :class:`EchoReceiver` for every connection."""

    protocol = EchoReceiver


def main(argv: list[str] | None = None) -> None:
    """Listen and echo until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)
    from twisted.internet import reactor as installed
    reactor: Any = installed
    port = reactor.listenTCP(args.port, EchoFactory(), backlog=BACKLOG,
                             interface=args.interface)
    print(f"listening {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
