"""File responses that stream in chunks under ASGI as under WSGI.

Django's FileResponse is a synchronous iterator; served over ASGI, Django reads it whole into memory first.
Under ASGI we hand Django an asynchronous iterator instead, reading the file in chunks off the event loop.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from typing import BinaryIO

from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK_BYTES = 256 * 1024


async def _chunks(handle: BinaryIO):
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


def file_response(
    request: HttpRequest, handle: BinaryIO, *, filename: str, as_attachment: bool = True, content_type: str | None = None
):
    if not isinstance(request, ASGIRequest):
        return FileResponse(handle, as_attachment=as_attachment, filename=filename, content_type=content_type)
    content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    response = StreamingHttpResponse(_chunks(handle), content_type=content_type)
    response["Content-Length"] = str(os.fstat(handle.fileno()).st_size - handle.tell())
    disposition = content_disposition_header(as_attachment, filename)
    if disposition:
        response["Content-Disposition"] = disposition
    return response
