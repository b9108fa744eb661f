"""``dim-chat`` itself (tui.__main__.main) in a pseudo-terminal against a real ``twistd -n dim``.

The person's side is the real program reading keys from a terminal; the other side, bob, is
a blocking socket speaking the contract.  Needs no asyncio reactor in the test process: the
chat runs as a child process with its own loop.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import stat
import struct
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.harness import REPO, EmbeddedDim

PASSWORD = "correct horse battery"
_ESCAPES = re.compile(rb"\x1b\[[0-9;?<>=]*[A-Za-z~]|\x1b[()][A-Z0-9]|\x1b[=>]")


def post(base: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    """One blocking JSON POST to the gateway."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.load(answer)


class RawPeer:
    """A blocking contract client: enough to be the other person in a conversation."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buffer = b""
        self.send({"type": "hello", "v": 1, "token": token})
        assert self.read_until("welcome")["type"] == "welcome"

    def send(self, frame: dict[str, Any]) -> None:
        """Write one frame."""
        payload = json.dumps(frame).encode()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def read_until(self, type_: str, timeout: float = 15.0) -> dict[str, Any]:
        """Read frames until one of ``type_`` (others are dropped)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while len(self.buffer) >= 4:
                (n,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) < 4 + n:
                    break
                frame = json.loads(self.buffer[4:4 + n])
                self.buffer = self.buffer[4 + n:]
                if frame.get("type") == type_:
                    return frame
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.buffer += chunk
        raise AssertionError(f"no {type_} frame within {timeout} s")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class Terminal:
    """dim-chat running in a pseudo-terminal; what it drew, with escapes removed."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become dim-chat
            os.chdir(REPO)
            os.execve(sys.executable, [sys.executable, "-m", "tui", *args], env)
        self.raw = b""

    @property
    def text(self) -> str:
        """Everything drawn so far, as text."""
        return _ESCAPES.sub(b"", self.raw).decode("utf-8", "replace")

    def pump(self, seconds: float) -> None:
        """Read output for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.raw += os.read(self.fd, 65536)
                except OSError:
                    return

    def wait_for(self, needle: str, timeout: float = 20.0, after: int = 0) -> int:
        """Read until ``needle`` shows (past position ``after``); its position."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            at = self.text.find(needle, after)
            if at >= 0:
                return at
            self.pump(0.1)
        raise AssertionError(f"{needle!r} not shown within {timeout} s; last screen:\n"
                             f"{self.text[-1500:]}")

    def type(self, keys: bytes) -> None:
        """Send keys."""
        os.write(self.fd, keys)

    def wait_exit(self, timeout: float = 15.0) -> int | None:
        """The exit status, or None if still running after ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        return None

    def kill(self) -> None:
        """Make sure the child is gone."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


class DimChatTests(unittest.TestCase):
    """The real program: login from DIM_PASSWORD, send, marks, receive, quit."""

    timeout = 120

    def alice_with_bob_open(self) -> tuple[Path, RawPeer, Terminal]:
        """An embedded dim where alice and bob are registered; bob connected over the raw
        protocol and dim-chat (alice) in a real terminal with bob's conversation open: the
        dim's directory, bob and the terminal."""
        work = Path(self.mktemp()).resolve()
        dim = EmbeddedDim(work)
        dim.start()
        self.addCleanup(dim.process.stop)
        for user in ("alice", "bob"):
            post(dim.base, "/v1/register", {"user": user, "password": PASSWORD})
        bob_login = post(dim.base, "/v1/login", {"user": "bob", "password": PASSWORD})
        bob = RawPeer(bob_login["node"]["host"], bob_login["node"]["port"], bob_login["token"])
        self.addCleanup(bob.close)

        env = dict(os.environ, DIM_PASSWORD=PASSWORD, TERM="xterm-256color",
                   XDG_CONFIG_HOME=str(work / "config"), XDG_STATE_HOME=str(work / "state"),
                   XDG_DATA_HOME=str(work / "data-home"))
        term = Terminal(["--gateway", dim.base, "--user", "alice"], env)
        self.addCleanup(term.kill)
        term.wait_for("connected to node")
        term.type(b"/open bob\r")
        term.wait_for("Conversation with bob")
        return work, bob, term

    def test_chat_against_embedded_dim(self) -> None:
        """dim-chat logs in, sends (sent, then delivered), shows bob's reply, quits cleanly."""
        work, bob, term = self.alice_with_bob_open()
        term.type(b"hello bob\r")
        at = term.wait_for("hello bob  ✓ sent")
        msg = bob.read_until("msg")
        self.assertEqual((msg["from"], msg["body"]), ("alice", "hello bob"))
        bob.send({"type": "ack", "seq": msg["seq"]})
        term.wait_for("✓✓ delivered", after=at)
        bob.send({"type": "send", "id": "b1", "to": "alice", "body": "hi alice"})
        term.wait_for("bob: hi alice")
        term.type(b"\x11")  # ctrl+q
        self.assertEqual(term.wait_exit(), 0)
        tokens = work / "state" / "dim-chat" / "tokens.json"
        self.assertEqual(stat.S_IMODE(tokens.stat().st_mode), 0o600)
        self.assertTrue(list((work / "data-home" / "dim-chat").glob("*/alice.sqlite3")))

    def test_reply_edit_react_recall_in_a_real_terminal(self) -> None:
        """In a real terminal: Up on the empty input edits the last message, alt+up and r
        reply to bob's, and bob's reaction and recall show on the messages themselves."""
        work, bob, term = self.alice_with_bob_open()
        bob.send({"type": "send", "id": "b1", "to": "alice", "body": "lunch?"})
        lunch = bob.read_until("sent")["mid"]
        term.wait_for("bob: lunch?")
        term.type(b"hello bbo\r")
        at = term.wait_for("hello bbo  ✓ sent")
        mine = bob.read_until("msg")
        term.type(b"\x1b[A")  # Up, the input empty
        at = term.wait_for("Editing your message", after=at)
        for key in (b"\x7f", b"\x7f", b"\x7f", b"bob\r"):  # as a person types
            term.type(key)
            term.pump(0.1)
        edit = bob.read_until("msg")
        self.assertEqual((edit["kind"], edit["ref"], edit["body"]),
                         ("edit", mine["mid"], "hello bob"))
        at = term.wait_for("hello bob (edited)", after=at)
        term.type(b"\x1b[1;3A")  # alt+up: the newest message
        term.pump(0.3)
        term.type(b"\x1b[A")  # up: bob's
        term.pump(0.3)
        term.type(b"r")
        at = term.wait_for("Replying to bob: lunch?", after=at)
        term.type(b"at noon\r")
        reply = bob.read_until("msg")
        self.assertEqual((reply["body"], reply["reply_to"]), ("at noon", lunch))
        at = term.wait_for("╭ bob: lunch?", after=at)
        bob.send({"type": "react", "id": "b2", "mid": mine["mid"], "emoji": "👍", "on": True})
        at = term.wait_for("👍 1", after=at)
        bob.send({"type": "recall", "id": "b3", "mid": lunch})
        term.wait_for("bob: message recalled", after=at)
        term.wait_for("╭ bob: message recalled", after=at)
        term.type(b"\x11")  # ctrl+q
        self.assertEqual(term.wait_exit(), 0)
