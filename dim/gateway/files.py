"""The gateway's calls about files: upload (streamed to disk) and download (with Range).

Each function is one route of :class:`dim.gateway.app.Gateway`.  Served by
``gateway.site()``, an upload's body is written to storage as it arrives
(:mod:`dim.gateway.uploads`); served by a plain ``Site``, the body twisted.web buffered is
copied to storage in pieces, with the same limit and answers.

An image upload (by its content) is refused with 400 when it has over
:data:`dim.files.DEFAULT_MAX_IMAGE_PIXELS` pixels or would decode to too many bytes, so no
avatar or image message is a decompression bomb for the clients that show it.

Downloads honour one ``Range`` per RFC 9110: a satisfiable byte range (suffix ranges and last
positions past the end clamped) gets 206 with ``Content-Range``; a range set none of whose
ranges is satisfiable gets 416 with ``Content-Range: bytes */SIZE``; a header that is not a
valid byte range set, several ranges, or an ``If-Range`` get the whole file (200).
"""
from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import NoRangeStaticProducer, SingleRangeStaticProducer

from dim.errors import BadRequest, Forbidden, NotFound, Unavailable
from dim.files import FILE_ID, FileStorage, Upload, choose_mime, image_problem
from dim.gateway.context import RouteContext
from dim.gateway.fields import has_control, query_text
from dim.store.interface import FileRecord


MAX_FILE_NAME = 255
#: Bytes read at a time when copying a buffered body to storage.
COPY_CHUNK = 64 * 1024


def file_dict(record: FileRecord) -> dict[str, Any]:
    """A file as the gateway shows it: ``{id, name, size, mime, sha256}``."""
    return {"id": record.id, "name": record.name, "size": record.size, "mime": record.mime,
            "sha256": record.sha256}


def content_disposition(name: str) -> bytes:
    """``attachment; filename*=UTF-8''...``: the name percent-encoded, safe in a header."""
    return ("attachment; filename*=UTF-8''" + urllib.parse.quote(name, safe="")).encode("ascii")


def storage(gw: RouteContext) -> FileStorage:
    """The gateway's file storage; Unavailable when it has none."""
    if gw.files is None:
        raise Unavailable("this gateway keeps no files")
    return gw.files


def finished_upload(gw: RouteContext, request: IRequest) -> Upload | None:
    """The request's body in storage: the upload a streaming request made (None if it was
    dropped, or discarded when the client went away), or a copy of the body twisted.web
    buffered (TooLarge past the limit)."""
    if getattr(request, "streamed", False):
        streamed: Upload | None = request.upload  # type: ignore[attr-defined]
        return streamed if streamed is not None and not streamed.done else None
    upload = storage(gw).begin(gw.max_file_size)
    content = request.content
    if content is not None:
        content.seek(0)
        while chunk := content.read(COPY_CHUNK):
            upload.write(chunk)
    return upload


async def upload(gw: RouteContext, request: IRequest) -> bytes:
    """Store the body as a file named ``name``: 201 ``{file: {id, name, size, mime, sha256}}``;
    400 empty or without a name; 413 over the size limit.

    The mime type is the Content-Type's, except that images are recognised by their content
    only (see :func:`dim.files.choose_mime`).
    """
    upload = None
    try:
        me = await gw.authenticated_user(request)
        storage(gw)
        name = query_text(request, "name")
        if not name or len(name) > MAX_FILE_NAME or has_control(name):
            raise BadRequest(f"name must be a file name of 1-{MAX_FILE_NAME} characters "
                             "without control characters")
        upload = finished_upload(gw, request)
        if upload is None:
            raise Unavailable("the upload was not kept; send it again")
        if upload.size == 0:
            raise BadRequest("the file is empty")
        declared = request.getHeader(b"content-type")
        mime = choose_mime(declared.decode("latin-1") if declared else None, upload.head)
        if mime.startswith("image/"):
            upload.flush()
            problem = image_problem(upload.partial_path, gw.limits.max_image_pixels)
            if problem is not None:
                raise BadRequest(problem)
        size, sha256 = upload.size, upload.sha256
        file_id = upload.commit()
        record = FileRecord(id=file_id, owner=me, name=name, size=size, mime=mime,
                            sha256=sha256, ts=gw.now_ms())
        try:
            await gw.store.add_file(record)
        except BaseException:
            storage(gw).remove(file_id)
            raise
        return gw.respond(request, {"file": file_dict(record)}, 201)
    finally:
        if upload is not None:
            upload.discard()
        elif getattr(request, "upload", None) is not None:
            request.upload.discard()  # type: ignore[attr-defined]


async def download(gw: RouteContext, request: IRequest, file_id: str) -> Any:
    """A file's bytes: 200 with Content-Type, Content-Length and Content-Disposition, or 206
    for a satisfiable Range (416 otherwise); 403 unless the caller may read it; 404."""
    me = await gw.authenticated_user(request)
    files = storage(gw)
    record = await gw.store.get_file(file_id) if FILE_ID.fullmatch(file_id) else None
    if record is None:
        raise NotFound(f"no such file: {file_id}")
    if not await gw.store.may_read_file(me, file_id):
        raise Forbidden("you may not read this file")
    path = files.path(file_id)
    if path is None:
        gw.log.error("file {id} is in the store but not on disk", id=file_id)
        raise NotFound(f"no such file: {file_id}")
    request.setHeader(b"content-disposition", content_disposition(record.name))
    request.setHeader(b"x-content-type-options", b"nosniff")
    return FileBytes(path, record.mime)


_RANGE_SPEC = re.compile(r"(?:([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18}))")


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """What a ``Range`` header asks of a file of ``size`` bytes (RFC 9110, 14.2): one
    satisfiable range as (first, last) inclusive, "unsatisfiable", or None (serve the whole
    file: no header, not a valid byte range set, or several ranges)."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p.strip(" \t") for p in spec.split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return None
    ranges: list[tuple[int, int]] = []
    for part in parts:
        m = _RANGE_SPEC.fullmatch(part)
        if m is None:
            return None
        first, last, suffix = m.groups()
        if suffix is not None:
            length = int(suffix)
            if length > 0 and size > 0:
                ranges.append((max(0, size - length), size - 1))
            continue
        start = int(first)
        end = int(last) if last else None
        if end is not None and end < start:
            return None
        if start < size:
            ranges.append((start, size - 1 if end is None else min(end, size - 1)))
    if not ranges:
        return "unsatisfiable"
    return ranges[0] if len(ranges) == 1 else None


class FileBytes(Resource):
    """A stored file's bytes with its mime type, whole or one byte range."""

    isLeaf = True

    def __init__(self, path: str, mime: str) -> None:
        super().__init__()
        self.path = path
        self.mime = mime

    def render_GET(self, request: IRequest) -> Any:
        """The bytes: 200 whole, 206 one range, 416 unsatisfiable (see :func:`byte_range`)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise NotFound("no such file") from None
        size = os.fstat(f.fileno()).st_size
        request.setHeader(b"accept-ranges", b"bytes")
        raw = request.getHeader(b"range")
        wanted = None
        if raw is not None and request.getHeader(b"if-range") is None:
            wanted = byte_range(raw.decode("latin-1"), size)
        if wanted == "unsatisfiable":
            f.close()
            request.setResponseCode(416)
            request.setHeader(b"content-range", f"bytes */{size}".encode("ascii"))
            request.setHeader(b"content-type", b"application/json")
            body = b'{"error":{"code":"bad_request","message":"the range is not satisfiable"}}'
            request.setHeader(b"content-length", str(len(body)).encode("ascii"))
            return body
        request.setHeader(b"content-type", self.mime.encode("ascii"))
        if isinstance(wanted, tuple):
            first, last = wanted
            length = last - first + 1
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {first}-{last}/{size}".encode("ascii"))
            request.setHeader(b"content-length", str(length).encode("ascii"))
            producer: Any = SingleRangeStaticProducer(request, f, first, length)
        else:
            request.setHeader(b"content-length", str(size).encode("ascii"))
            producer = NoRangeStaticProducer(request, f)
        if request.method == b"HEAD":
            f.close()
            return b""
        producer.start()
        return NOT_DONE_YET

    render_HEAD = render_GET
