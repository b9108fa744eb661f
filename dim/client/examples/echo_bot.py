"""An echo bot: answers every direct message it receives with the same body.

Run it against a DIM gateway (the account must exist; ``--register`` creates it)::

    DIM_BOT_PASSWORD=... python -m dim.client.examples.echo_bot http://127.0.0.1:8080 echo

It logs in through the gateway, connects to the node the login names and stays connected
(the session reconnects by itself).  It answers only messages that arrive from now on, from
other users, and not in groups, so two bots in one group do not echo each other forever.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Generator
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from dim.client.cache import ChatMessage
from dim.client.events import (MessageReceived, SendRefused, SendTimedOut, SessionEvent,
    WriteExpired)
from dim.client.gateway import GatewayClient
from dim.client.session import ClientSession

log = Logger()


class EchoBot:
    """Listens to a session and answers each direct text message with the same body."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        #: How many answers the node stored, and how many of those reached their reader.
        self.answered = 0
        self.delivered = 0
        session.subscribe(self.heard)

    def heard(self, event: SessionEvent) -> None:
        """A session event: answer a message from someone else, ignore the rest."""
        if isinstance(event, MessageReceived):
            entry = event.entry
            if entry.kind == "text" and entry.group is None and entry.sender != self.session.user:
                self.answer(entry)

    @defer.inlineCallbacks
    def answer(self, entry: ChatMessage) -> Generator[Deferred[Any], Any, None]:
        """Send ``entry``'s body back to its sender, as a reply to it."""
        try:
            sent = yield self.session.send(entry.sender, entry.body, reply_to=entry.mid)
        except (SendTimedOut, SendRefused, WriteExpired) as e:
            log.warn("could not answer {sender}: {e}", sender=entry.sender, e=e)
            return
        self.answered += 1
        log.info("answered {sender} (seq {seq})", sender=entry.sender, seq=sent.seq)
        yield sent.delivered
        self.delivered += 1


@defer.inlineCallbacks
def start_bot(reactor: Any, gateway: GatewayClient, user: str, password: str, *,
              register: bool = False) -> Generator[Deferred[Any], Any, EchoBot]:
    """Log in through ``gateway`` as ``user`` (registering first if asked), connect, and
    answer from now on: the running :class:`EchoBot`."""
    if register:
        yield gateway.register(user, password)
    login = yield gateway.login(user, password)
    # Start at the inbox's end, so messages answered before a restart are not answered again.
    inbox = yield gateway.messages(after=0, limit=1)
    session = ClientSession(gateway, reactor, login["user"], login["token"], device="echo-bot",
                            last_seq=inbox["last_seq"])
    bot = EchoBot(session)
    session.start(login["node"])
    return bot


@defer.inlineCallbacks
def main(reactor: Any, *argv: str) -> Generator[Deferred[Any], Any, None]:
    """The command line: start the bot and run until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dim.client.examples.echo_bot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("gateway", help="the gateway's URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("user", help="the bot's account")
    parser.add_argument("--register", action="store_true", help="create the account first")
    args = parser.parse_args(argv)
    password = os.environ.get("DIM_BOT_PASSWORD")
    if not password:
        parser.error("set DIM_BOT_PASSWORD to the bot's password")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    bot = yield start_bot(reactor, GatewayClient(args.gateway), args.user, password,
                          register=args.register)
    log.info("{user} is listening", user=bot.session.user)
    yield Deferred()  # until the reactor stops (Ctrl-C)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
