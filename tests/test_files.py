"""Tests of :mod:`dim.files`: uploads written as they arrive, ids, limits and sniffing."""
from __future__ import annotations

import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase

from dim.errors import TooLarge
from dim.files import FILE_ID, OCTET_STREAM, FileStorage, choose_mime, is_image, sniff_mime
from tests.fakes.files import JPEG, PDF, PNG


class FileStorageTests(SynchronousTestCase):
    """FileStorage keeps uploads under random ids, written as they arrive."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.storage = FileStorage(self.directory)

    def test_upload_commit(self) -> None:
        """Bytes written in pieces end up under a fresh id, with size, sha256 and head."""
        upload = self.storage.begin(limit=100)
        upload.write(b"hello ")
        upload.write(b"world")
        self.assertEqual(upload.size, 11)
        self.assertEqual(upload.sha256, hashlib.sha256(b"hello world").hexdigest())
        self.assertEqual(upload.head, b"hello world")
        file_id = upload.commit()
        self.assertTrue(FILE_ID.fullmatch(file_id))
        with open(self.storage.path(file_id), "rb") as f:
            self.assertEqual(f.read(), b"hello world")
        self.assertEqual(self.storage.head(file_id, 5), b"hello")
        self.assertEqual(os.listdir(self.directory), [file_id])

    def test_partial_invisible(self) -> None:
        """Before commit nothing is stored under an id; discard leaves nothing behind."""
        upload = self.storage.begin(limit=100)
        upload.write(b"abc")
        self.assertEqual([n for n in os.listdir(self.directory) if FILE_ID.fullmatch(n)], [])
        upload.discard()
        upload.discard()
        self.assertEqual(os.listdir(self.directory), [])

    def test_ids_random(self) -> None:
        """Two uploads get different, unguessable (32-character) ids."""
        ids = set()
        for _ in range(20):
            upload = self.storage.begin(limit=10)
            upload.write(b"x")
            ids.add(upload.commit())
        self.assertEqual(len(ids), 20)

    def test_limit(self) -> None:
        """Exactly the limit is fine; one byte more raises TooLarge and discards it all."""
        upload = self.storage.begin(limit=10)
        upload.write(b"x" * 10)
        self.assertEqual(upload.commit() is not None, True)
        upload = self.storage.begin(limit=10)
        upload.write(b"x" * 6)
        self.assertRaises(TooLarge, upload.write, b"x" * 5)
        self.assertEqual(len(os.listdir(self.directory)), 1)
        self.assertRaises(ValueError, upload.write, b"x")

    def test_head_bounded(self) -> None:
        """Only the first 8 KiB are kept for sniffing, however much is written."""
        upload = self.storage.begin(limit=1 << 20)
        for _ in range(10):
            upload.write(b"y" * 1000 + b"z" * 1000)
        self.assertEqual(len(upload.head), 8192)
        upload.discard()

    def test_path_rejects_bad_ids(self) -> None:
        """Malformed ids, path tricks and unknown ids have no path."""
        for bad in ("", "..", "../etc/passwd", "x" * 32 + "/", "a" * 31, "a" * 32):
            self.assertIsNone(self.storage.path(bad))
            self.assertIsNone(self.storage.head(bad))
        self.assertFalse(self.storage.remove("a" * 32))

    def test_remove(self) -> None:
        """A stored file can be removed once."""
        upload = self.storage.begin(limit=10)
        upload.write(b"x")
        file_id = upload.commit()
        self.assertTrue(self.storage.remove(file_id))
        self.assertFalse(self.storage.remove(file_id))

    def test_remove_partials(self) -> None:
        """Partial files left by interrupted uploads are cleaned up; stored files stay."""
        left = self.storage.begin(limit=10)
        left.write(b"x")
        kept = self.storage.begin(limit=10)
        kept.write(b"y")
        file_id = kept.commit()
        self.assertEqual(FileStorage(self.directory).remove_partials(), 1)
        self.assertEqual(os.listdir(self.directory), [file_id])


class MimeTests(SynchronousTestCase):
    """Images are recognised by content; other types keep what was declared."""

    def test_sniff(self) -> None:
        """PNG, JPEG and PDF are recognised; text is not."""
        self.assertEqual(sniff_mime(PNG), "image/png")
        self.assertEqual(sniff_mime(JPEG), "image/jpeg")
        self.assertEqual(sniff_mime(PDF), "application/pdf")
        self.assertIsNone(sniff_mime(b"just some text"))
        self.assertIsNone(sniff_mime(b""))
        self.assertTrue(is_image(PNG))
        self.assertFalse(is_image(PDF))
        self.assertFalse(is_image(b""))

    def test_image_trusts_content(self) -> None:
        """An image's sniffed type wins over any declared type."""
        self.assertEqual(choose_mime("text/plain", PNG), "image/png")
        self.assertEqual(choose_mime("image/gif", JPEG), "image/jpeg")
        self.assertEqual(choose_mime(None, PNG), "image/png")

    def test_fake_image_is_not_one(self) -> None:
        """A declared image that is not one by content is not recorded as an image."""
        self.assertEqual(choose_mime("image/png", b"<script>alert(1)</script>"), OCTET_STREAM)
        self.assertEqual(choose_mime("image/png", PDF), "application/pdf")

    def test_declared_kept(self) -> None:
        """Non-image content keeps its declared type, lower-cased and without parameters."""
        self.assertEqual(choose_mime("Text/Plain; charset=utf-8", b"hi"), "text/plain")
        self.assertEqual(choose_mime("application/pdf", PDF), "application/pdf")
        self.assertEqual(choose_mime("application/x-custom", PDF), "application/x-custom")

    def test_missing_or_invalid_declared(self) -> None:
        """No or an invalid declared type gives the sniffed type, else octet-stream."""
        self.assertEqual(choose_mime(None, b"hi"), OCTET_STREAM)
        self.assertEqual(choose_mime("", PDF), "application/pdf")
        self.assertEqual(choose_mime("not a mime", b"hi"), OCTET_STREAM)
        self.assertEqual(choose_mime("text/plain\r\nX-Evil: 1", b"hi"), OCTET_STREAM)
