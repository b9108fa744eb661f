"""Tests of the gateway's limits: login throttling, registrations per address, fair password
checks, request deadlines, connection caps, password change, bodies, images, Range."""
from __future__ import annotations

import os
import sqlite3
import stat
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from dim import secret
from dim.errors import RateLimited
from dim.gateway import openapi
from dim.gateway.app import Gateway
from dim.gateway.files import byte_range
from dim.gateway.limits import GatewayLimits, address_key, client_address
from dim.gateway.uploads import StreamingRequestFactory
from dim.passwords import PasswordHasher
from dim.store.sqlite import private_file
from tests.fakes.gateway import GatewayTestCase
from tests.fakes.gateway import FilesTestCase, StreamingTestCase, http_request
from tests.fakes.tokens import FAST_ARGON2, InlineReactor

PROXY = "127.0.0.1"


class LimitsTestCase(GatewayTestCase):
    """A gateway whose test client (StubTreq, 127.0.0.1) is a trusted proxy, so each call
    can name its client address in X-Forwarded-For."""

    limits = GatewayLimits(trusted_proxies=frozenset({PROXY}))

    def setUp(self) -> None:
        super().setUp()
        self.gateway = Gateway(self.store, self.tokens, self.passwords, self.nodes,
                               self.sessions, clock=self.clock, files=self.files,
                               pusher=self.pusher, limits=self.limits)
        from treq.testing import StubTreq
        self.http = StubTreq(self.gateway.resource())

    def login_from(self, user: str, password: str, address: str = "10.1.1.1") -> Any:
        """POST /v1/login from ``address``; the answer."""
        return self.call("POST", "/v1/login", {"user": user, "password": password},
                         headers={"X-Forwarded-For": address})

    def retry_after(self, answer: Any) -> int:
        """The Retry-After header of a 429, as an integer."""
        self.assertError(answer, 429, "rate_limited")
        return int(answer.headers.getRawHeaders(b"retry-after")[0])


class LoginThrottleTests(LimitsTestCase):
    """Logins slow down after failures, per account and per address, without locking out."""

    def test_mistyping_a_few_times_is_fine(self) -> None:
        """Five wrong passwords in a row, then the right one logs in at once."""
        self.register()
        for _ in range(5):
            self.assertError(self.login_from("alice", "wrong-pass"), 401, "unauthorized")
        self.assertEqual(self.login_from("alice", "password1").status, 200)

    def test_delays_grow(self) -> None:
        """Past five failures each one doubles the wait: 1, 2, 4, 8, 16 s after ten."""
        self.register()
        for _ in range(5):
            self.login_from("alice", "wrong-pass")
        waits = []
        for _ in range(5):
            self.assertEqual(self.login_from("alice", "wrong-pass").status, 401)
            wait = self.retry_after(self.login_from("alice", "password1"))
            waits.append(wait)
            self.clock.advance(wait)
        self.assertEqual(waits, [1, 2, 4, 8, 16])
        self.assertEqual(self.login_from("alice", "password1").status, 200)

    def test_blocked_attempt_costs_no_check(self) -> None:
        """While an account must wait, attempts are refused without a password check."""
        self.register()
        for _ in range(6):
            self.login_from("alice", "wrong-pass")
        before = len(self.pool.calls)
        self.retry_after(self.login_from("alice", "password1"))
        self.assertEqual(len(self.pool.calls), before)

    def test_success_clears_the_account(self) -> None:
        """A good login forgets the account's failures."""
        self.register()
        for _ in range(5):
            self.login_from("alice", "wrong-pass")
        self.assertEqual(self.login_from("alice", "password1").status, 200)
        for _ in range(5):
            self.assertEqual(self.login_from("alice", "wrong-pass").status, 401)

    def test_failures_forgotten(self) -> None:
        """An hour after the last failure, the account starts afresh."""
        self.register()
        for _ in range(8):
            self.login_from("alice", "wrong-pass")
            self.clock.advance(300)
        self.clock.advance(3601)
        self.assertEqual(self.login_from("alice", "wrong-pass").status, 401)

    def test_unknown_accounts_count_per_address(self) -> None:
        """A guesser trying many names from one address is slowed once past 50 failures;
        other addresses are not."""
        for i in range(51):
            self.assertEqual(self.login_from(f"nobody{i}", "wrong-pass").status, 401)
        self.retry_after(self.login_from("nobody-else", "wrong-pass"))
        self.register()
        self.assertEqual(self.login_from("alice", "password1", "10.2.2.2").status, 200)

    def test_address_not_taken_from_untrusted_peer(self) -> None:
        """Without a trusted proxy, X-Forwarded-For is ignored: every call is the peer's."""
        request = DummyRequest([b""])
        request.client = IPv4Address("TCP", "192.0.2.7", 5555)
        request.requestHeaders.setRawHeaders(b"x-forwarded-for", [b"10.9.9.9"])
        self.assertEqual(client_address(request, frozenset()), "192.0.2.7")
        self.assertEqual(client_address(request, frozenset({"192.0.2.7"})), "10.9.9.9")
        request.requestHeaders.setRawHeaders(b"x-forwarded-for", [b"10.9.9.9, 192.0.2.8"])
        self.assertEqual(client_address(request, frozenset({"192.0.2.7", "192.0.2.8"})),
                         "10.9.9.9")
        request.requestHeaders.setRawHeaders(b"x-forwarded-for", [b"junk"])
        self.assertEqual(client_address(request, frozenset({"192.0.2.7"})), "192.0.2.7")


    def test_ipv6_counted_by_64(self) -> None:
        """Addresses of one IPv6 /64 share their limits; IPv4 ones count alone."""
        for i in range(51):
            self.login_from(f"nobody{i}", "wrong-pass", f"2001:db8:1:2::{i + 1:x}")
        self.retry_after(self.login_from("nobody", "wrong-pass", "2001:db8:1:2:ffff::9"))
        self.assertEqual(self.login_from("nobody", "wrong-pass", "2001:db8:1:3::1").status,
                         401)
        self.assertEqual(address_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_key("::ffff:192.0.2.1"), "192.0.2.1")


class RegistrationLimitTests(LimitsTestCase):
    """Registrations per address: 100 in a row pass, the next ones wait."""

    def test_hundred_pass_two_hundred_do_not(self) -> None:
        """Of 200 registrations from one address, the first 100 pass and the rest get 429."""
        codes = [self.call("POST", "/v1/register", {"user": f"u{i}", "password": "password1"},
                           headers={"X-Forwarded-For": "10.3.3.3"}).status
                 for i in range(200)]
        self.assertEqual(codes[:100], [201] * 100)
        self.assertEqual(codes[100:], [429] * 100)
        other = self.call("POST", "/v1/register", {"user": "x1", "password": "password1"},
                          headers={"X-Forwarded-For": "10.4.4.4"})
        self.assertEqual(other.status, 201)
        answer = self.call("POST", "/v1/register", {"user": "late", "password": "password1"},
                           headers={"X-Forwarded-For": "10.3.3.3"})
        self.assertEqual(self.retry_after(answer), 180)
        self.clock.advance(180)
        answer = self.call("POST", "/v1/register", {"user": "late", "password": "password1"},
                           headers={"X-Forwarded-For": "10.3.3.3"})
        self.assertEqual(answer.status, 201)


class ManualPool:
    """A thread pool whose calls wait until the test runs them, in order."""

    max = 2

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        self.waiting.append((on_result, f, args))

    def run_one(self) -> None:
        """Run the oldest call."""
        on_result, f, args = self.waiting.pop(0)
        on_result(True, f(*args))


class FairHashingTests(SynchronousTestCase):
    """One client's flood of password checks cannot starve another client."""

    def test_flood_does_not_refuse_others(self) -> None:
        """280 parallel checks of one client: 8 are queued, the rest refused; another
        client's check is accepted and runs right after the one running now."""
        pool = ManualPool()
        hasher = PasswordHasher(pool, InlineReactor(), **FAST_ARGON2)  # type: ignore[arg-type]
        h = PasswordHasher(_InlinePool(), InlineReactor(),  # type: ignore[arg-type]
                           **FAST_ARGON2).hash("password1")
        good_hash = self.successResultOf(h)
        flood = [hasher.verify(good_hash, "wrong", client="10.6.6.6") for _ in range(280)]
        refused = [d for d in flood if d.called]
        for d in refused:
            self.failureResultOf(d, RateLimited)
        self.assertEqual(len(refused), 272)
        honest = hasher.verify(good_hash, "password1", client="10.7.7.7")
        self.assertNoResult(honest)
        runs = 0
        while not honest.called:
            pool.run_one()
            runs += 1
        # The two running when it came, one more of the flood's (taken in turn), then it.
        self.assertEqual(runs, 4)
        self.assertTrue(self.successResultOf(honest))



class _InlinePool:
    max = 1

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        on_result(True, f(*args))


class GatewayFairnessTests(LimitsTestCase):
    """Through the gateway, a guesser's flood leaves other clients' logins alone."""

    def test_honest_login_during_flood(self) -> None:
        """280 parallel wrong logins from one address: at most 8 are checked, the rest get
        429, and an honest login from another address gets 200 after one check."""
        self.register()
        pool = ManualPool()
        self.gateway.passwords = PasswordHasher(pool, InlineReactor(),  # type: ignore[arg-type]
                                                per_client=8, **FAST_ARGON2)
        guesses = [self.http.request("POST", "http://gateway.test/v1/login",
                                     json={"user": "alice", "password": "nope-nope"},
                                     headers={"X-Forwarded-For": "10.6.6.6"})
                   for _ in range(280)]
        self.http.flush()
        self.assertEqual(len(pool.waiting), 2)
        honest = self.http.request("POST", "http://gateway.test/v1/login",
                                   json={"user": "alice", "password": "password1"},
                                   headers={"X-Forwarded-For": "10.8.8.8"})
        self.http.flush()
        for _ in range(4):
            pool.run_one()
            self.http.flush()
        self.assertEqual(self.gateway.passwords.pending, 5)  # the flood's left
        self.assertEqual(self.successResultOf(self.flushed(honest)).code, 200)
        while pool.waiting:
            pool.run_one()
            self.http.flush()
        codes = [self.successResultOf(self.flushed(d)).code for d in guesses]
        self.assertEqual((codes.count(401), codes.count(429)), (8, 272))


class DeadlineTests(StreamingTestCase):
    """A request must arrive whole within its deadline, whatever the pace of its bytes."""

    def test_slow_headers_closed(self) -> None:
        """A byte a second of headers is answered 408 and closed after 30 s."""
        sent = 0
        for byte in b"POST /v1/login HTTP/1.1\r\nHost: a\r\nX-Slow: 1":
            if self.transport.disconnecting:
                break
            self.channel.dataReceived(bytes([byte]))
            self.site_clock.advance(1)
            sent += 1
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(sent, 30)
        self.assertIn(b"408 Request Timeout", self.transport.value())

    def test_prompt_request_unaffected(self) -> None:
        """A request sent at once is answered, and its deadline does not fire later."""
        self.channel.dataReceived(http_request("GET /v1/health HTTP/1.1\nHost: a", b""))
        self.assertIn(b"200 OK", self.transport.value())
        self.site_clock.advance(45)
        self.assertFalse(self.transport.disconnecting)

    def test_idle_keep_alive_closed(self) -> None:
        """An idle keep-alive connection is closed after the idle timeout (60 s)."""
        self.channel.dataReceived(http_request("GET /v1/health HTTP/1.1\nHost: a", b""))
        self.site_clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.site_clock.advance(2)
        self.assertTrue(self.transport.disconnecting)


class ConnectionCapTests(FilesTestCase):
    """At most max_connections_per_address connections from one address at once."""

    def test_cap(self) -> None:
        """Over the cap a connection is refused; closing one makes room."""
        gw = Gateway(self.store, self.tokens, self.passwords, self.nodes, self.sessions,
                     clock=self.clock, limits=GatewayLimits(max_connections_per_address=2))
        factory = gw.http_factory(reactor=Clock())
        addr = IPv4Address("TCP", "192.0.2.1", 1000)
        opened = []
        for _ in range(2):
            p = factory.buildProtocol(addr)
            p.makeConnection(StringTransport(peerAddress=addr))
            opened.append(p)
        self.assertIsNone(factory.buildProtocol(addr))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1000)))
        opened[0].connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(addr))


class BodyLimitTests(StreamingTestCase):
    """Non-upload bodies are capped while read; uploads are authenticated first."""

    def test_huge_login_refused_at_headers(self) -> None:
        """A 200 MiB login body is refused with 413 as soon as its headers are in."""
        head = "POST /v1/login HTTP/1.1\nHost: a\nContent-Length: 209715200"
        self.channel.dataReceived(http_request(head, b"{"))
        status, _, body = self.answer()
        self.assertEqual((status, body["error"]["code"]), (413, "too_large"))

    def test_chunked_body_refused_when_over(self) -> None:
        """A chunked body is refused once it passes 64 KiB."""
        head = http_request("POST /v1/register HTTP/1.1\nHost: a\nTransfer-Encoding: chunked",
                            b"")
        self.channel.dataReceived(head)
        chunk = b"x" * 8192
        for _ in range(9):
            self.channel.dataReceived(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        self.assertEqual(self.answer()[0], 413)

    def test_bad_token_writes_nothing(self) -> None:
        """An upload with a bad token is refused before its body ends; nothing on disk."""
        self.channel.dataReceived(http_request(self.head(5, token="garbage"), b"hel"))
        self.assertEqual(self.stored(), [])
        self.assertEqual(self.answer()[0], 401)

    def test_body_held_until_token_checked(self) -> None:
        """While the token is being checked nothing is written; then the upload goes on."""
        pending: defer.Deferred[str] = defer.Deferred()
        self.requests_factory().verify = lambda token: pending
        self.channel.dataReceived(http_request(self.head(5, extra="\nExpect: 100-continue"),
                                               b""))
        self.assertEqual(self.stored(), [])
        self.assertNotIn(b"100 Continue", self.transport.value())
        pending.callback("alice")
        self.assertIn(b"100 Continue", self.transport.value())
        self.channel.dataReceived(b"hello")
        status, _, body = self.answer_after_continue()
        self.assertEqual(status, 201)
        self.assertEqual(body["file"]["size"], 5)

    def requests_factory(self) -> Any:
        """The StreamingRequestFactory behind the recording one."""
        return self.recording_factory

    def setUp(self) -> None:
        super().setUp()
        cells = self.site.requestFactory.__closure__ or ()  # type: ignore[union-attr]
        self.recording_factory = next(c.cell_contents for c in cells
                                      if isinstance(c.cell_contents, StreamingRequestFactory))

    def answer_after_continue(self) -> tuple[int, dict[str, str], Any]:
        """The answer after an interim 100 Continue."""
        raw = self.transport.value().split(b"HTTP/1.1 100 Continue\r\n\r\n", 1)[1]
        self.transport.clear()
        self.transport.write(raw)
        return self.answer()


class ImageTests(FilesTestCase):
    """Images are checked for their size before they are accepted."""

    def test_bomb_refused(self) -> None:
        """A small PNG of 9000x9000 pixels is refused as an image; a normal one passes."""
        from tests.fakes.files import PNG, png
        token = self.login()
        bomb = png(9000, 9000)
        self.assertLess(len(bomb), 200_000)
        answer = self.upload_answer(token, bomb, "bomb.png", "image/png")
        self.assertError(answer, 400, "bad_request")
        self.assertIn("pixels", answer.json["error"]["message"])
        self.assertEqual(self.upload(token, PNG, "ok.png", "image/png")["mime"], "image/png")


class RangeTests(FilesTestCase):
    """Range per RFC 9110: 206 for one satisfiable range, 416 for none, else the whole."""

    def setUp(self) -> None:
        super().setUp()
        self.alice = self.login("alice")
        self.data = bytes(range(256)) * 4
        self.file = self.upload(self.alice, self.data, "d.bin")

    def get(self, header: str) -> Any:
        """A download with this Range header."""
        return self.download(self.alice, self.file["id"], {"Range": header})

    def test_empty_set_is_ignored(self) -> None:
        """``bytes=`` is not a valid range: the whole file, length and bytes agreeing."""
        answer = self.get("bytes=")
        self.assertEqual((answer.status, answer.raw, answer.length),
                         (200, self.data, len(self.data)))

    def test_huge_suffix_clamped(self) -> None:
        """``bytes=-99999999`` is the whole file as a 206 with the true length."""
        answer = self.get("bytes=-99999999")
        self.assertEqual((answer.status, answer.raw, answer.length),
                         (206, self.data, len(self.data)))
        self.assertEqual(self.header(answer, "content-range"), "bytes 0-1023/1024")

    def test_last_past_end_clamped(self) -> None:
        """``bytes=1000-5000`` gives the last 24 bytes."""
        answer = self.get("bytes=1000-5000")
        self.assertEqual((answer.status, answer.raw), (206, self.data[1000:]))
        self.assertEqual(self.header(answer, "content-range"), "bytes 1000-1023/1024")

    def test_invalid_ignored(self) -> None:
        """Malformed or multiple ranges get the whole file, never a 500."""
        for header in ("bytes=5-2", "bytes=abc", "items=0-1", "bytes=0-0,5-6", "bytes=--1",
                       "bytes=1-2-3", "bytes 0-1", "bytes=99999999999999999999-"):
            answer = self.get(header)
            self.assertEqual((answer.status, answer.raw), (200, self.data), header)

    def test_unsatisfiable(self) -> None:
        """A zero suffix or a start past the end is 416 with bytes */size."""
        for header in ("bytes=-0", "bytes=1024-", "bytes=2000-3000, 5000-"):
            answer = self.get(header)
            self.assertEqual(answer.status, 416, header)
            self.assertEqual(self.header(answer, "content-range"), "bytes */1024")

    def test_parser(self) -> None:
        """byte_range on its own: ranges, suffixes, clamping."""
        self.assertEqual(byte_range("bytes=0-0", 10), (0, 0))
        self.assertEqual(byte_range("BYTES=2-", 10), (2, 9))
        self.assertEqual(byte_range("bytes=2-", 10), (2, 9))
        self.assertEqual(byte_range("bytes=-3", 10), (7, 9))
        self.assertEqual(byte_range("bytes= 1-2 ", 10), (1, 2))
        self.assertEqual(byte_range("bytes=10-", 10), "unsatisfiable")


class PasswordChangeTests(GatewayTestCase):
    """PUT /v1/password changes the password and revokes every other token."""

    def test_change(self) -> None:
        """The new password works, the old does not; other tokens die, the caller's lives."""
        mine = self.login()
        other = self.login()
        answer = self.call("PUT", "/v1/password", {"old": "password1", "new": "new-secret-1"},
                           token=mine)
        self.assertEqual((answer.status, answer.json), (200, {}))
        self.assertError(self.call("GET", "/v1/profile", token=other), 401, "unauthorized")
        self.assertEqual(self.call("GET", "/v1/profile", token=mine).status, 200)
        self.assertError(self.call("POST", "/v1/login",
                                   {"user": "alice", "password": "password1"}),
                         401, "unauthorized")
        fresh = self.call("POST", "/v1/login", {"user": "alice", "password": "new-secret-1"})
        self.assertEqual(fresh.status, 200)
        self.assertEqual(self.call("GET", "/v1/profile",
                                   token=fresh.json["token"]).status, 200)

    def test_wrong_old(self) -> None:
        """A wrong old password is 403 and changes nothing."""
        mine = self.login()
        answer = self.call("PUT", "/v1/password", {"old": "nope-nope", "new": "new-secret-1"},
                           token=mine)
        self.assertError(answer, 403, "forbidden")
        self.assertEqual(self.call("POST", "/v1/login",
                                   {"user": "alice", "password": "password1"}).status, 200)

    def test_invalid(self) -> None:
        """A short new password is 400; no token is 401."""
        mine = self.login()
        self.assertError(self.call("PUT", "/v1/password", {"old": "password1", "new": "x"},
                                   token=mine), 400, "bad_request")
        self.assertError(self.call("PUT", "/v1/password",
                                   {"old": "password1", "new": "new-secret-1"}),
                         401, "unauthorized")

    def test_tokens_never_logged(self) -> None:
        """A request that fails inside the gateway logs no part of its token."""
        token = self.login()
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def broken(*args: Any) -> Any:
            return defer.fail(RuntimeError("disk on fire"))

        self.patch(self.store, "fetch", broken)
        self.assertEqual(self.call("GET", "/v1/messages?after=0", token=token).status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(events)
        from twisted.logger import formatEvent
        text = " ".join(formatEvent(e) + repr(e) for e in events)
        self.assertNotIn(token.split(".")[2], text)
        self.assertNotIn(token.split(".")[1], text)


class SmallOnesTests(GatewayTestCase):
    """Control characters in a search and trailing newlines in names are refused."""

    def test_search_nul(self) -> None:
        """q=%00 (or another control character) is 400, not every user."""
        token = self.login()
        self.register("bob")
        for q in ("%00", "a%00", "%0A", "%1B"):
            self.assertError(self.call("GET", f"/v1/users?q={q}", token=token),
                             400, "bad_request")

    def test_trailing_newline_name(self) -> None:
        """A user name with a trailing newline is refused at registration and in frames."""
        self.assertError(self.register("x\n"), 400, "bad_request")
        import msgspec

        from dim.protocol.frames import ClientId, UserName
        for kind, value in ((UserName, "x\n"), (ClientId, "id\n")):
            with self.assertRaises(msgspec.ValidationError):
                msgspec.convert(value, kind)


    def test_deep_json(self) -> None:
        """JSON nested 30,000 levels deep (under 64 KiB) is 400, not a logged 500."""
        raw = b"[" * 30000 + b"]" * 30000
        self.assertError(self.call("POST", "/v1/register", raw=raw), 400, "bad_request")
        self.assertEqual(self.flushLoggedErrors(), [])


class PluginOptionsTests(SynchronousTestCase):
    """The limits are options of both twistd plugins."""

    def test_dim_and_gateway_options(self) -> None:
        """--registrations-burst, --trusted-proxy... reach GatewayLimits; bad ones are
        refused with a usage error."""
        from twisted.python import usage

        from dim.gateway.tap import Options as GatewayOptions
        from dim.standalone import Options as DimOptions
        self.patch(os, "environ", {**os.environ, "DIM_SECRET": "s" * 32})
        for options_class, extra in ((DimOptions, ["--data", self.mktemp()]),
                                     (GatewayOptions, [])):
            options = options_class()
            options.parseOptions([*extra, "--registrations-burst", "7", "--trusted-proxy",
                                  "10.0.0.1, ::1", "--login-free-failures", "3",
                                  "--request-timeout", "5", "--max-image-pixels", "1000"])
            limits = options["limits"]
            self.assertEqual((limits.registrations_burst, limits.login_free_failures,
                              limits.request_timeout, limits.max_image_pixels),
                             (7, 3, 5.0, 1000))
            self.assertEqual(limits.trusted_proxies, frozenset({"10.0.0.1", "::1"}))
            self.assertEqual(options_class().parseOptions(extra) or None, None)
            for bad in (["--trusted-proxy", "proxy.example"], ["--request-timeout", "0"],
                        ["--login-share", "0"]):
                with self.assertRaises(usage.UsageError):
                    options_class().parseOptions([*extra, *bad])


class SecretAndFileModeTests(SynchronousTestCase):
    """Short secrets are refused; data files are private."""

    def test_short_secret_refused(self) -> None:
        """DIM_SECRET under 32 bytes is refused with a message saying how long it must be."""
        self.patch(os, "environ", {**os.environ, "DIM_SECRET": "x"})
        with self.assertRaises(secret.SecretMissing) as caught:
            secret.from_environment()
        self.assertIn("at least 32", str(caught.exception))
        from twisted.python import usage

        from dim.standalone import Options
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--data", self.mktemp()])

    def test_sqlite_and_secret_private(self) -> None:
        """dim.sqlite3 (and its WAL), the kept secret and uploaded files are created 0600,
        the files directory 0700, whatever the umask."""
        from pathlib import Path
        data = Path(self.mktemp())
        data.mkdir()
        old = os.umask(0o022)
        try:
            env = {k: v for k, v in os.environ.items() if k != "DIM_SECRET"}
            self.patch(os, "environ", env)
            secret.load_or_create(data)
            path = str(data / "dim.sqlite3")
            private_file(path)
            db = sqlite3.connect(path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE t (x)")
            db.commit()
            self.addCleanup(db.close)
        finally:
            os.umask(old)
        from dim.files import FileStorage
        old = os.umask(0o022)
        try:
            storage = FileStorage(str(data / "files"))
            upload = storage.begin(10)
            upload.write(b"x")
            file_id = upload.commit()
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE((data / "files").stat().st_mode), 0o700)
        self.assertEqual(stat.S_IMODE((data / "files" / file_id).stat().st_mode), 0o600)
        for name in ("dim.sqlite3", "dim.sqlite3-wal", "secret"):
            self.assertEqual(stat.S_IMODE((data / name).stat().st_mode), 0o600, name)


class OpenAPITests(GatewayTestCase):
    """The OpenAPI description matches the Klein routes exactly."""

    def test_every_route_described(self) -> None:
        """Every route and method is in the document, and nothing else is."""
        routes = set()
        for rule in Gateway.app.url_map.iter_rules():
            path = rule.rule.replace("<string:", "{").replace(">", "}")
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    routes.add((path, method.lower()))
        described = {(path, method) for path, ops in openapi.DOCUMENT["paths"].items()
                     for method in ops}
        self.assertEqual(routes, described)

    def test_served(self) -> None:
        """GET /v1/openapi.json answers the document without a token."""
        answer = self.call("GET", "/v1/openapi.json")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json["openapi"], "3.1.0")
        self.assertIn("/v1/password", answer.json["paths"])

