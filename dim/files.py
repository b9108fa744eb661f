"""Where uploaded files live: one directory, each file under its random, unguessable id.

An upload is written as it arrives (:class:`Upload`): into a hidden partial file beside the
finished ones, with a running sha256, its size checked against a limit on every write, and its
first bytes kept for content sniffing.  :meth:`Upload.commit` gives it an id and renames it
into place; until then nothing is visible under any id.  The metadata (owner, name, mime...)
is the store's business (:class:`dim.store.interface.FileRecord`), not this module's.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from typing import IO

import filetype

from dim.errors import TooLarge

#: A file id: 32 characters of the URL-safe base64 alphabet (192 random bits).
FILE_ID = re.compile(r"[A-Za-z0-9_\-]{32}")
#: How many leading bytes are kept for sniffing the content type.
SNIFF_BYTES = 8192
#: The type of content nobody described and sniffing did not recognise.
OCTET_STREAM = "application/octet-stream"
_MIME = re.compile(r"[A-Za-z0-9!#$&^_.+\-]{1,64}/[A-Za-z0-9!#$&^_.+\-]{1,64}")
_PARTIAL_PREFIX = ".partial-"
#: The most pixels an image (one frame of it) may have, by default.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: The most bytes an image may take once decoded (every frame, every band), by default.
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024 * 1024


def new_file_id() -> str:
    """A fresh random file id."""
    return secrets.token_urlsafe(24)


def sniff_mime(head: bytes) -> str | None:
    """The mime type the content's first bytes reveal, or None when they reveal none."""
    kind = filetype.guess(head) if head else None
    return kind.mime if kind is not None else None


def is_image(head: bytes) -> bool:
    """Whether the content's first bytes are those of an image (by sniffing, not by name)."""
    return filetype.is_image(head) if head else False


def choose_mime(declared: str | None, head: bytes) -> str:
    """The mime type to record for content declared as ``declared`` starting with ``head``.

    Images are recognised by their content only: if sniffing finds an image, that type wins
    over whatever was declared; a declared ``image/*`` that does not sniff as an image is not
    recorded as one (the sniffed type, or application/octet-stream, instead).  Anything else
    keeps its declared type (lower-cased, parameters dropped), the sniffed type when none or an
    invalid one was declared, and application/octet-stream when neither says anything.
    """
    sniffed = sniff_mime(head)
    if sniffed is not None and sniffed.startswith("image/"):
        return sniffed
    mime = (declared or "").split(";", 1)[0].strip().lower()
    if not _MIME.fullmatch(mime) or mime.startswith("image/"):
        return sniffed or OCTET_STREAM
    return mime


class Upload:
    """One file being written as its bytes arrive: size, sha256 and leading bytes so far.

    ``write`` raises :class:`dim.errors.TooLarge` (and discards everything) as soon as the
    size passes ``limit``.  Finish with :meth:`commit` (the id) or :meth:`discard`.
    """

    def __init__(self, directory: str, limit: int) -> None:
        fd, self._partial = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, dir=directory)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        self._directory = directory
        self.limit = limit
        self.size = 0
        self.head = b""
        self._sha256 = hashlib.sha256()
        self.done = False

    @property
    def sha256(self) -> str:
        """The hex sha256 of the bytes written so far."""
        return self._sha256.hexdigest()

    def write(self, data: bytes) -> None:
        """Append bytes; TooLarge (and the upload discarded) once the size passes the limit."""
        if self._file is None:
            raise ValueError("the upload is finished")
        if self.size + len(data) > self.limit:
            self.discard()
            raise TooLarge(f"the file is over the limit of {self.limit} bytes")
        self._file.write(data)
        self._sha256.update(data)
        if len(self.head) < SNIFF_BYTES:
            self.head += data[:SNIFF_BYTES - len(self.head)]
        self.size += len(data)

    @property
    def partial_path(self) -> str:
        """Where the bytes are being written (until :meth:`commit`)."""
        return self._partial

    def flush(self) -> None:
        """Push what was written so far to the file, for a reader of :attr:`partial_path`."""
        if self._file is not None:
            self._file.flush()

    def commit(self) -> str:
        """Make the bytes durable and visible under a new id, and return the id."""
        if self._file is None:
            raise ValueError("the upload is finished")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        file_id = new_file_id()
        os.replace(self._partial, os.path.join(self._directory, file_id))
        self.done = True
        return file_id

    def discard(self) -> None:
        """Forget the bytes (nothing happens if the upload is already finished)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self.done = True
        try:
            os.unlink(self._partial)
        except FileNotFoundError:
            pass


class FileStorage:
    """The directory of uploaded files (created 0700 if missing), each under its id (0600)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = os.path.abspath(directory)

    def begin(self, limit: int) -> Upload:
        """Start an upload of at most ``limit`` bytes."""
        return Upload(self.directory, limit)

    def path(self, file_id: str) -> str | None:
        """Where the file of ``file_id`` is, or None when the id is malformed or has none."""
        if not FILE_ID.fullmatch(file_id):
            return None
        path = os.path.join(self.directory, file_id)
        return path if os.path.isfile(path) else None

    def head(self, file_id: str, size: int = SNIFF_BYTES) -> bytes | None:
        """The first ``size`` bytes of a stored file, or None when there is no such file."""
        path = self.path(file_id)
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read(size)

    def remove(self, file_id: str) -> bool:
        """Delete a stored file; whether there was one."""
        path = self.path(file_id)
        if path is None:
            return False
        os.unlink(path)
        return True

    def remove_partials(self) -> int:
        """Delete the partial files interrupted uploads left behind (at start); how many."""
        count = 0
        for name in os.listdir(self.directory):
            if name.startswith(_PARTIAL_PREFIX):
                try:
                    os.unlink(os.path.join(self.directory, name))
                    count += 1
                except FileNotFoundError:
                    pass
        return count


def image_problem(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                  max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> str | None:
    """Why the image at ``path`` must be refused (too many pixels, or too large once
    decoded: a decompression bomb), or None.  Only the image's headers are read (and, for an
    animated image, its frame count); nothing is decoded.  Content Pillow cannot read is not
    refused here: no client can decode it either."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            bands = len(image.getbands())
            animated = getattr(image, "is_animated", False)
            frames = int(getattr(image, "n_frames", 1)) if animated else 1
    except Image.DecompressionBombError:
        return f"the image has more than {max_pixels} pixels"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None
    pixels = width * height
    if pixels > max_pixels:
        return (f"the image is {width}x{height}: more than {max_pixels} pixels "
                "is not accepted")
    if pixels * bands * frames > max_bytes:
        return (f"the image would take {pixels * bands * frames} bytes once decoded, "
                f"over {max_bytes}")
    return None
