"""Downloads that stream: one file in chunks, or many files as a zip made on the fly (never spooled to disk).

Django's FileResponse is a synchronous iterator; served over ASGI, Django reads it whole into memory first. Under
ASGI these hand Django an asynchronous iterator instead, reading in chunks off the event loop, so a 10 GiB output
costs a chunk of memory, not 10 GiB.

Zips are made by zipstream-ng as they are sent: a stored (uncompressed) zip of known files has a known length, sent as
Content-Length, so browsers show the download's progress.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from zipfile import ZIP_DEFLATED, ZIP_STORED

from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header
from zipstream import ZipStream

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ZipMember:
    """One file of a zip: its name inside the archive and where its bytes are."""

    arcname: str
    path: Path


async def _async_chunks(chunks: Iterator[bytes], close=None):
    """Pull each chunk of a blocking iterator in a thread, so the event loop never waits on the disk."""
    sentinel = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, sentinel)) is not sentinel:
            yield chunk
    finally:
        if close is not None:
            close()


def _file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK_BYTES):
        yield chunk


def _streaming(request: HttpRequest, chunks: Iterator[bytes], *, content_type: str, close=None) -> StreamingHttpResponse:
    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(_async_chunks(chunks, close), content_type=content_type)
    response = StreamingHttpResponse(chunks, content_type=content_type)
    if close is not None:
        response._resource_closers.append(close)
    return response


def file_response(
    request: HttpRequest, handle: BinaryIO, *, filename: str, as_attachment: bool = True, content_type: str | None = None
):
    """One open file, streamed; the handle is closed when the response is done."""
    if not isinstance(request, ASGIRequest):
        return FileResponse(handle, as_attachment=as_attachment, filename=filename, content_type=content_type)
    content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    response = _streaming(request, _file_chunks(handle), content_type=content_type, close=handle.close)
    response["Content-Length"] = str(os.fstat(handle.fileno()).st_size - handle.tell())
    disposition = content_disposition_header(as_attachment, filename)
    if disposition:
        response["Content-Disposition"] = disposition
    return response


def zip_response(request: HttpRequest, members: Iterable[ZipMember], *, filename: str, compress: bool = False):
    """A zip of `members`, made while it is sent. `compress` deflates (source code); stored is best for outputs,
    which are mostly incompressible, and gives the download a length."""
    archive = ZipStream(compress_type=ZIP_DEFLATED if compress else ZIP_STORED, compress_level=6 if compress else None,
                        sized=not compress)
    for member in members:
        archive.add_path(str(member.path), member.arcname, recurse=False)
    response = _streaming(request, iter(archive), content_type="application/zip")
    if archive.sized:
        response["Content-Length"] = str(len(archive))
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
