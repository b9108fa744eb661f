"""Where received files go and what sent files are: names, sizes, mime types and kinds.

Downloads land in the XDG download directory (``platformdirs.user_downloads_dir()``); a
download in progress is kept as a hidden ``.part`` file named after the file id, so an
interrupted one resumes with a Range request, and is renamed to a free name when whole.
"""
from __future__ import annotations

import mimetypes
import os
import re
from typing import Any

import platformdirs

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def download_dir() -> str:
    """The person's download directory (XDG ``DOWNLOAD``, else ``~/Downloads``)."""
    return platformdirs.user_downloads_dir()


def safe_name(name: str) -> str:
    """A file name safe to create: no directories, no control characters, not hidden."""
    name = _UNSAFE.sub("_", os.path.basename(name.replace("\\", "/"))).strip()
    name = name.lstrip(".") or "download"
    return name[:200]


def partial_path(directory: str, file_id: str) -> str:
    """Where the download of ``file_id`` is kept until it is whole."""
    return os.path.join(directory, f".dim-{safe_name(file_id)}.part")


def free_path(directory: str, name: str) -> str:
    """``directory/name``, or ``name (1).ext``, ``name (2).ext`` ... if that exists."""
    name = safe_name(name)
    stem, ext = os.path.splitext(name)
    candidate, n = os.path.join(directory, name), 1
    while os.path.exists(candidate):
        candidate = os.path.join(directory, f"{stem} ({n}){ext}")
        n += 1
    return candidate


def mime_of(path: str) -> str:
    """The mime type of a file to send, guessed from its name."""
    mime, _ = mimetypes.guess_type(path)
    return mime or "application/octet-stream"


def kind_for(mime: str) -> str:
    """The message kind for a file: "image" for images, else "file"."""
    return "image" if mime.startswith("image/") else "file"


def human_size(size: int) -> str:
    """A byte count as people read it: 512 B, 1.5 KB, 3.2 MB."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def describe_file(kind: str, file: dict[str, Any] | None) -> str:
    """How a file message is shown: ``[image: name, size]`` or ``[file: name, size]``."""
    if not file:
        return f"[{kind}]"
    label = "image" if kind == "image" else "file"
    return f"[{label}: {file.get('name', '?')}, {human_size(int(file.get('size') or 0))}]"


class ClosableReader:
    """A file being uploaded that reads as empty once closed.

    The upload's producer may read another chunk after the gateway has already refused the
    file (too large) and the file was closed; an empty read ends it quietly instead of
    failing with "read of closed file".
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, or nothing once closed."""
        if self.closed:
            return b""
        return self._source.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move in the file (the producer measures its length this way)."""
        return 0 if self.closed else self._source.seek(offset, whence)

    def tell(self) -> int:
        """Where the next read starts."""
        return 0 if self.closed else self._source.tell()

    def close(self) -> None:
        """Close the file; later reads give nothing."""
        self.closed = True
        self._source.close()
