"""Tests of the gateway's file calls: upload, download with Range, access rules, limits,
and uploads streamed to disk by ``gateway.site()``."""
from __future__ import annotations

import hashlib
import json
import os

from twisted.internet.testing import StringTransport

from dim.files import FILE_ID, Upload
from tests.fakes.files import JPEG, PDF, PNG
from tests.fakes.gateway import NOW
from tests.fakes.gateway import FilesTestCase, StreamingTestCase, http_request


class UploadTests(FilesTestCase):
    """POST /v1/files?name=NAME."""

    def test_created(self) -> None:
        """201 {file: {id, name, size, mime, sha256}}; the bytes are on disk under the id."""
        data = b"hello, world\n" * 100
        answer = self.upload_answer(self.login(), data, "notes.txt", "text/plain")
        self.assertEqual(answer.status, 201, answer.raw)
        self.assertEqual(answer.content_type, "application/json")
        f = answer.json["file"]
        self.assertEqual(set(f), {"id", "name", "size", "mime", "sha256"})
        self.assertTrue(FILE_ID.fullmatch(f["id"]))
        self.assertEqual((f["name"], f["size"], f["mime"], f["sha256"]),
                         ("notes.txt", len(data), "text/plain",
                          hashlib.sha256(data).hexdigest()))
        with open(os.path.join(self.files.directory, f["id"]), "rb") as stored:
            self.assertEqual(stored.read(), data)
        record = self.successResultOf(self.store.get_file(f["id"]))
        self.assertEqual((record.owner, record.ts), ("alice", NOW * 1000))

    def test_ids_differ(self) -> None:
        """The same bytes uploaded twice get two different ids."""
        token = self.login()
        self.assertNotEqual(self.upload(token, b"x")["id"], self.upload(token, b"x")["id"])

    def test_unicode_name(self) -> None:
        """A name may be any text without control characters, up to 255 characters."""
        token = self.login()
        self.assertEqual(self.upload(token, b"x", "%C3%A9t%C3%A9%20%22x%22.txt")["name"],
                         'été "x".txt')
        self.assertEqual(self.upload(token, b"x", "n" * 255)["name"], "n" * 255)

    def test_bad_name(self) -> None:
        """No name, an empty or over-long one, or one with control characters is 400."""
        token = self.login()
        for name in (None, "", "n" * 256, "a%0Ab", "a%00b", "%ff"):
            self.assertError(self.upload_answer(token, b"x", name), 400, "bad_request")
        self.assertEqual(self.stored(), [])

    def test_empty(self) -> None:
        """An empty body is 400 and stores nothing."""
        self.assertError(self.upload_answer(self.login(), b""), 400, "bad_request")
        self.assertEqual(self.stored(), [])

    def test_unauthenticated(self) -> None:
        """Uploads need a token: 401, nothing stored."""
        self.assertError(self.upload_answer(None, b"data"), 401, "unauthorized")
        self.assertError(self.upload_answer("garbage", b"data"), 401, "unauthorized")
        self.assertEqual(self.stored(), [])

    def test_image_mime_sniffed(self) -> None:
        """Images get the sniffed type whatever was declared; fake images are not images."""
        token = self.login()
        self.assertEqual(self.upload(token, PNG, "a.png", "text/plain")["mime"], "image/png")
        self.assertEqual(self.upload(token, JPEG, "a.gif", "image/gif")["mime"], "image/jpeg")
        self.assertEqual(self.upload(token, b"<html>", "a.png", "image/png")["mime"],
                         "application/octet-stream")
        self.assertEqual(self.upload(token, PDF, "a.png", "image/png")["mime"],
                         "application/pdf")

    def test_other_mime_declared(self) -> None:
        """Non-images keep the declared type, without its parameters."""
        token = self.login()
        self.assertEqual(self.upload(token, PDF, "a.pdf", "application/pdf")["mime"],
                         "application/pdf")
        self.assertEqual(self.upload(token, b"x,y\n", "a.csv", "text/csv; charset=utf-8")
                         ["mime"], "text/csv")

    def test_no_storage(self) -> None:
        """A gateway without file storage answers 503."""
        token = self.login()
        self.gateway.files = None
        self.assertError(self.upload_answer(token, b"x"), 503, "unavailable")
        self.assertError(self.download(token, "A" * 32), 503, "unavailable")

    def test_store_failure_removes_file(self) -> None:
        """If the store cannot keep the metadata, the bytes are removed again (500)."""
        from twisted.internet import defer
        token = self.login()
        self.patch(self.store, "add_file", lambda record: defer.fail(RuntimeError("full")))
        self.assertError(self.upload_answer(token, b"data"), 500, "internal")
        self.assertEqual(self.stored(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SmallLimitTests(FilesTestCase):
    """A gateway with max_file_size=1000, served by a plain Site (buffered bodies)."""

    max_file_size = 1000

    def test_limit(self) -> None:
        """Exactly the limit is stored; one byte more is 413 too_large, nothing kept."""
        token = self.login()
        self.assertEqual(self.upload(token, b"x" * 1000)["size"], 1000)
        before = self.stored()
        self.assertError(self.upload_answer(token, b"x" * 1001), 413, "too_large")
        self.assertEqual(self.stored(), before)


class DownloadTests(FilesTestCase):
    """GET /v1/files/ID: bytes, headers, Range."""

    def setUp(self) -> None:
        super().setUp()
        self.alice = self.login("alice")
        self.data = bytes(range(256)) * 40
        self.file = self.upload(self.alice, self.data, "report 2024 é.bin",
                                "application/x-report")

    def test_whole(self) -> None:
        """200 with the bytes, Content-Type, Content-Length and Content-Disposition."""
        answer = self.download(self.alice, self.file["id"])
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.raw, self.data)
        self.assertEqual(answer.content_type, "application/x-report")
        self.assertEqual(answer.length, len(self.data))
        self.assertEqual(self.header(answer, "content-disposition"),
                         "attachment; filename*=UTF-8''report%202024%20%C3%A9.bin")
        self.assertEqual(self.header(answer, "accept-ranges"), "bytes")
        self.assertEqual(self.header(answer, "x-content-type-options"), "nosniff")

    def test_range(self) -> None:
        """A satisfiable Range gets 206 with Content-Range and just those bytes."""
        answer = self.download(self.alice, self.file["id"], {"Range": "bytes=100-199"})
        self.assertEqual(answer.status, 206)
        self.assertEqual(answer.raw, self.data[100:200])
        self.assertEqual(self.header(answer, "content-range"),
                         f"bytes 100-199/{len(self.data)}")
        self.assertEqual(answer.length, 100)
        answer = self.download(self.alice, self.file["id"], {"Range": "bytes=-10"})
        self.assertEqual((answer.status, answer.raw), (206, self.data[-10:]))

    def test_resume(self) -> None:
        """A download cut short resumes from where it stopped and matches the sha256."""
        first = self.download(self.alice, self.file["id"], {"Range": "bytes=0-4095"}).raw
        self.assertEqual(len(first), 4096)
        rest = self.download(self.alice, self.file["id"],
                             {"Range": f"bytes={len(first)}-"})
        self.assertEqual(rest.status, 206)
        whole = first + rest.raw
        self.assertEqual(hashlib.sha256(whole).hexdigest(), self.file["sha256"])

    def test_unsatisfiable(self) -> None:
        """A Range past the end is 416 with Content-Range bytes */size."""
        answer = self.download(self.alice, self.file["id"],
                               {"Range": f"bytes={len(self.data)}-"})
        self.assertEqual(answer.status, 416)
        self.assertEqual(self.header(answer, "content-range"), f"bytes */{len(self.data)}")

    def test_not_found(self) -> None:
        """An unknown, malformed or path-like id is 404."""
        for bad in ("A" * 32, "nope", "..%2F..%2Fetc%2Fpasswd"):
            self.assertError(self.download(self.alice, bad), 404, "not_found")

    def test_missing_on_disk(self) -> None:
        """Metadata without bytes on disk is 404 (and logged), not 500."""
        self.files.remove(self.file["id"])
        self.assertError(self.download(self.alice, self.file["id"]), 404, "not_found")

    def test_unauthenticated(self) -> None:
        """Downloads need a token."""
        self.assertError(self.download(None, self.file["id"]), 401, "unauthorized")


class AccessTests(FilesTestCase):
    """Who may download: the uploader, whoever received it, everyone for avatars."""

    def setUp(self) -> None:
        super().setUp()
        self.t = {name: self.login(name) for name in ("alice", "bob", "carol", "dave")}
        self.file = self.upload(self.t["alice"], PDF, "doc.pdf", "application/pdf")

    def send(self, sender: str, recipients: list[str], group: str | None = None) -> None:
        """Store a message carrying the file, as the node does."""
        self.successResultOf(self.store.store_message(
            sender, f"c{len(recipients)}{group}", recipients, group, "", "file",
            {k: self.file[k] for k in ("id", "name", "size", "mime")}, NOW * 1000))

    def status(self, user: str) -> int:
        """The status of ``user`` downloading the file (checking the 403 body's shape)."""
        answer = self.download(self.t[user], self.file["id"])
        if answer.status == 403:
            self.assertError(answer, 403, "forbidden")
        return answer.status

    def test_uploader_only(self) -> None:
        """Before it is sent, only the uploader may download it; others get 403."""
        self.assertEqual({u: self.status(u) for u in self.t},
                         {"alice": 200, "bob": 403, "carol": 403, "dave": 403})

    def test_recipient(self) -> None:
        """The recipient of a message pointing at the file may download it."""
        self.send("alice", ["bob"])
        self.assertEqual({u: self.status(u) for u in self.t},
                         {"alice": 200, "bob": 200, "carol": 403, "dave": 403})

    def test_removed_member_keeps_access(self) -> None:
        """Group members at the time may download it, even after being removed; members
        added later may not."""
        group = self.call("POST", "/v1/groups", {"name": "g", "members": ["bob", "carol"]},
                          token=self.t["alice"]).json["group"]
        self.send("alice", ["bob", "carol"], group["id"])
        self.assertEqual(self.call("DELETE", f"/v1/groups/{group['id']}/members/bob",
                                   token=self.t["alice"]).status, 200)
        self.assertEqual(self.call("POST", f"/v1/groups/{group['id']}/members",
                                   {"users": ["dave"]}, token=self.t["alice"]).status, 200)
        self.assertEqual({u: self.status(u) for u in self.t},
                         {"alice": 200, "bob": 200, "carol": 200, "dave": 403})

    def test_avatar_public(self) -> None:
        """An avatar can be downloaded by every logged-in user, and by no one without a
        token."""
        image = self.upload(self.t["bob"], PNG, "bob.png", "image/png")
        self.assertError(self.download(self.t["carol"], image["id"]), 403, "forbidden")
        answer = self.call("PUT", "/v1/profile", {"avatar": image["id"]}, token=self.t["bob"])
        self.assertEqual(answer.status, 200, answer.raw)
        answer = self.download(self.t["carol"], image["id"])
        self.assertEqual((answer.status, answer.raw), (200, PNG))
        self.assertEqual(answer.content_type, "image/png")
        self.assertError(self.download(None, image["id"]), 401, "unauthorized")


class StreamingUploadTests(StreamingTestCase):
    """Bodies of uploads go to storage chunk by chunk, never into request.content."""

    def test_streamed(self) -> None:
        """An upload sent in pieces is stored; request.content never holds the body."""
        data = bytes(range(256)) * 3
        written: list[int] = []
        write = Upload.write
        self.patch(Upload, "write", lambda upload, chunk: (written.append(len(chunk)),
                                                           write(upload, chunk))[1])
        self.channel.dataReceived(http_request(self.head(len(data))))
        content = self.requests[0].content
        self.assertTrue(self.requests[0].streamed)
        for i in range(0, len(data), 100):
            self.assertEqual(content.getvalue(), b"")
            self.assertEqual(sum(written), i)
            self.channel.dataReceived(data[i:i + 100])
        status, headers, body = self.answer()
        self.assertEqual(status, 201, self.transport.value())
        self.assertEqual(body["file"]["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(written, [100] * 7 + [68])
        with open(os.path.join(self.files.directory, body["file"]["id"]), "rb") as f:
            self.assertEqual(f.read(), data)

    def test_chunked(self) -> None:
        """A chunked upload within the limit is stored."""
        data = b"abc" * 100
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 64]), data[i:i + 64])
                          for i in range(0, len(data), 64)) + b"0\r\n\r\n"
        self.channel.dataReceived(http_request(self.head(None)) + chunks)
        status, _, body = self.answer()
        self.assertEqual(status, 201, self.transport.value())
        self.assertEqual(body["file"]["size"], 300)

    def test_length_over_limit_refused_at_once(self) -> None:
        """A Content-Length over the limit gets 413 as soon as the headers are in; a client
        waiting for 100 Continue gets none, and its connection closes at once."""
        self.channel.dataReceived(http_request(self.head(1001, "\nExpect: 100-continue")))
        status, headers, body = self.answer()
        self.assertEqual(status, 413)
        self.assertEqual(body["error"]["code"], "too_large")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertNotIn(b"100 Continue", self.transport.value())
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.stored(), [])

    def test_length_over_limit_drained(self) -> None:
        """Without Expect, a refused body is read and dropped, then the connection closes;
        only one answer is written."""
        self.channel.dataReceived(http_request(self.head(1001)))
        status, headers, body = self.answer()
        self.assertEqual((status, body["error"]["code"]), (413, "too_large"))
        self.assertFalse(self.transport.disconnecting)
        self.channel.dataReceived(b"x" * 1001)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value().count(b"HTTP/1.1"), 1)
        self.assertEqual(self.stored(), [])

    def test_linger_bounded(self) -> None:
        """A refused client that never sends its body is disconnected after the linger."""
        self.channel.dataReceived(http_request(self.head(10**9)))
        self.assertEqual(self.answer()[0], 413)
        self.assertFalse(self.transport.disconnecting)
        self.site_clock.advance(5)
        self.assertTrue(self.transport.disconnecting)

    def test_chunked_over_limit(self) -> None:
        """A chunked body is counted as it comes: 413 once past the limit, nothing kept."""
        self.channel.dataReceived(http_request(self.head(None)))
        self.channel.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.stored()), 1)
        self.channel.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n")
        status, _, body = self.answer()
        self.assertEqual((status, body["error"]["code"]), (413, "too_large"))
        self.assertEqual(self.stored(), [])
        self.channel.dataReceived(b"0\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_unauthenticated_not_stored(self) -> None:
        """Without Authorization the body is dropped, not stored, and the answer is 401."""
        request = http_request("POST /v1/files?name=a HTTP/1.1\nHost: g\nContent-Length: 5",
                               b"hello")
        self.channel.dataReceived(request)
        self.assertEqual(self.answer()[0], 401)
        self.assertEqual(self.stored(), [])

    def test_bad_token_discarded(self) -> None:
        """With a bad token the streamed bytes are discarded after the 401."""
        self.channel.dataReceived(http_request(self.head(5, token="garbage"), b"hello"))
        self.assertEqual(self.answer()[0], 401)
        self.assertEqual(self.stored(), [])

    def test_refused_by_route_discarded(self) -> None:
        """A streamed body the route refuses (no name) is discarded after the 400."""
        self.channel.dataReceived(http_request(self.head(5, path="/v1/files"), b"hello"))
        status, _, body = self.answer()
        self.assertEqual((status, body["error"]["code"]), (400, "bad_request"))
        self.assertEqual(self.stored(), [])

    def test_empty_streamed(self) -> None:
        """An empty streamed body is 400 and leaves nothing behind."""
        self.channel.dataReceived(http_request(self.head(0)))
        self.assertEqual(self.answer()[0], 400)
        self.assertEqual(self.stored(), [])

    def test_client_gone_midway(self) -> None:
        """A client that disconnects mid-upload leaves no partial file behind."""
        self.channel.dataReceived(http_request(self.head(500), b"x" * 200))
        self.assertEqual(len(self.stored()), 1)
        self.lose()
        self.assertEqual(self.stored(), [])

    def test_client_gone_before_answer(self) -> None:
        """A client that leaves after sending its body but before the answer: nothing is
        stored and nothing is logged as an error."""
        from twisted.internet import defer
        pending: defer.Deferred[str] = defer.Deferred()
        self.patch(self.tokens, "verify", lambda token: pending)
        self.channel.dataReceived(http_request(self.head(5), b"hello"))
        self.assertEqual(len(self.stored()), 1)
        self.lose()
        self.assertEqual(self.stored(), [])
        pending.callback("alice")
        self.assertEqual(self.stored(), [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_other_routes_unchanged(self) -> None:
        """Other requests' bodies are read as usual (a JSON call through the same Site)."""
        body = json.dumps({"name": "x"}).encode()
        self.channel.dataReceived(http_request(
            f"PUT /v1/profile HTTP/1.1\nHost: g\nAuthorization: Bearer {self.token}\n"
            f"Content-Length: {len(body)}", body))
        status, _, answer = self.answer()
        self.assertEqual((status, answer["name"]), (200, "x"))
        self.assertFalse(self.requests[0].streamed)


class ConstructionTests(FilesTestCase):
    """The gateway's new constructor arguments are checked."""

    def test_limits_must_be_positive(self) -> None:
        """max_file_size and max_group_members below 1 are refused."""
        for kwargs in ({"max_file_size": 0}, {"max_group_members": 0}):
            self.assertRaises(ValueError, type(self.gateway), self.store, self.tokens,
                              self.passwords, self.nodes, self.sessions, clock=self.clock,
                              **kwargs)

    def test_site_streams(self) -> None:
        """gateway.site() makes StreamingRequests with the gateway's storage and limit."""
        from dim.gateway.uploads import StreamingRequest
        site = self.gateway.site()
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        self.addCleanup(channel.connectionLost, None)
        request = site.requestFactory(channel._channel)
        self.assertIsInstance(request, StreamingRequest)
        self.assertIs(request.storage, self.files)
        self.assertEqual(request.limit, self.max_file_size)
