"""``dim-chat [--gateway URL] [--user NAME] [--ca FILE]``: the terminal chat.

Textual and Twisted share one asyncio loop: the asyncio reactor is installed on a fresh loop
before anything imports the reactor, the reactor runs that loop, and the Textual app runs as
a task on it.  ``DIM_PASSWORD``, when set, is used as the password (with ``--user``, or the
last user).  Log events go to ``$XDG_STATE_HOME/dim-chat/dim-chat.log``, never the terminal.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, cast


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="dim-chat", description="DIM's terminal chat.")
    parser.add_argument("--gateway", metavar="URL",
                        help="the gateway (default: the last one used, else http://127.0.0.1:8080)")
    parser.add_argument("--user", metavar="NAME", help="log in as NAME")
    parser.add_argument("--device", default="dim-chat", help="this device's name (max 64 chars)")
    parser.add_argument("--ca", metavar="FILE",
                        help="trust the certificate authorities in this PEM file for an "
                             "https gateway and TLS nodes (default: the system's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the terminal chat until the person quits."""
    args = parse_args(argv)
    from tui.logfile import start_logging
    start_logging()  # before anything can log: nothing may write over the screen
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor
    asyncioreactor.install(loop)
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from tui.images import prepare
    prepare()  # ask the terminal about pictures while it can still be asked

    import platformdirs

    from dim.client.config import ClientConfig
    from dim.client.gateway import GatewayClient
    from dim.client.chat import ChatClient
    from tui.app import ChatApp

    from dim.client.tls import https_agent, load_trust_root

    trust_root = None
    request_options: dict[str, object] = {}
    if args.ca:
        try:
            trust_root = load_trust_root(args.ca)
        except (OSError, ValueError) as e:
            print(f"dim-chat: --ca {args.ca}: {e}", file=sys.stderr)
            return 2
        request_options["agent"] = https_agent(reactor, trust_root)
    config = ClientConfig()
    gateway_url = args.gateway or config.gateway
    client = ChatClient(GatewayClient(gateway_url, request_options=request_options), reactor,
                        config=config, device=args.device[:64], trust_root=trust_root)
    app = ChatApp(client, user=args.user or config.user,
                  password=os.environ.get("DIM_PASSWORD") or None, gateway_url=gateway_url,
                  state_path=os.path.join(platformdirs.user_state_dir("dim-chat"),
                                          "chat.json"))
    outcome: dict[str, BaseException] = {}

    def run_app() -> None:
        d = Deferred.fromFuture(asyncio.ensure_future(app.run_async(), loop=loop))

        def failed(f):
            outcome["error"] = f.value
        d.addErrback(failed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run_app)
    cast(Any, reactor).run(installSignalHandlers=False)
    if "error" in outcome:
        raise outcome["error"]
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
