"""Request bodies: each route's size limit, enforced before a byte is stored, and bodies read as the view reads them.

Django's ASGI handler reads every request body whole into a temporary file before the view starts: a 2 GB upload to a
route that accepts 300 MB is read whole (and, for a form upload, copied a second time by the multipart parser) before
anything refuses it. `StreamingASGIHandler` replaces that with:

- a limit per route (`register(url_name, limit)`, by the route's URL name; STUDIO_REQUEST_MAX_BYTES otherwise);
- a declared Content-Length over the limit answered 413 at once, before any of the body is read;
- a body without a declared length (chunked) read only as the view consumes it, and refused as soon as it passes the
  limit, so the server stops reading within one chunk of it;
- nothing buffered twice: the view's parser (the multipart parser writing an upload's one temporary file, or the
  JSON parser) reads straight from the connection, so temporary disk use stays under the limit plus one chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import io
import json
import logging
import threading
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import FileResponse, HttpResponse
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve, set_script_prefix
from django.utils.html import escape

logger = logging.getLogger(__name__)
_LIMITS: dict[str, Callable[[], int]] = {}
# URL prefixes whose refusals an app shapes itself (its API's error shape): prefix -> render(status, message) giving
# (body, content type).
_REFUSALS: dict[str, Callable[[int, str], tuple[bytes, str]]] = {}
RECEIVE_TIMEOUT_SECONDS = 60  # a client that stops sending its body for this long is given up on
REFUSAL_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Request refused · Studio</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>That request was refused</h1><p id="refusal-message">{message}</p>
<p>Go back and send something smaller, or <a href="/">start again</a>.</p></body></html>"""


def register(url_name: str, limit: Callable[[], int]) -> None:
    """Let the route named `url_name` ("namespace:name" for namespaced routes) accept bodies up to `limit()` bytes.
    Register before the first request (in an app's `ready`)."""
    _LIMITS[url_name] = limit
    _route_limits.cache_clear()


def register_refusal(prefix: str, render: Callable[[int, str], tuple[bytes, str]]) -> None:
    """Refusals of requests under `prefix` (a 413 before the view runs) have the body `render(status, message)`
    gives, in the error shape of the API there."""
    _REFUSALS[prefix] = render


def body_limit_for(path: str) -> int:
    return _route_of(path)[0]


def _route_of(path: str) -> tuple[int, bool]:
    """The body limit of the route `path` resolves to, and whether its view is a coroutine function (an async view:
    the live streams); a path no route takes gets the default limit and the sync path (its 404, or a static file)."""
    try:
        match = resolve(path)
    except Resolver404:
        return settings.STUDIO_REQUEST_MAX_BYTES, False
    limit = _route_limits().get(match.route)
    return (limit() if limit is not None else settings.STUDIO_REQUEST_MAX_BYTES), iscoroutinefunction(match.func)


@functools.cache
def _route_limits() -> dict[str, Callable[[], int]]:
    """Registered limits by route: several API operations share a path (GET lists, POST uploads), and resolving a
    path names only the first of them, so a limit applies to its route whatever the method."""
    found: dict[str, Callable[[], int]] = {}

    def walk(patterns, prefix: str, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern) and f"{namespace}{pattern.name}" in _LIMITS:
                found[prefix + str(pattern.pattern)] = _LIMITS[f"{namespace}{pattern.name}"]

    walk(get_resolver().url_patterns, "", "")
    return found


def too_big_message(limit: int) -> str:
    return f"The request body is too large: at most {limit:,} bytes are accepted here. Send less at a time."


class RequestBody(io.RawIOBase):
    """A request body read from the ASGI server as it is consumed (from the view's thread), up to `limit` bytes."""

    def __init__(self, receive, limit: int):
        self._receive = receive
        self._buffer = b""
        self._more = True
        self.limit = limit
        self.received = 0
        self.too_big = False
        self.done = asyncio.Event()  # the whole body was received (or the client went away)
        self._loop = asyncio.get_running_loop()

    def readable(self) -> bool:
        return True

    def _next_message(self):
        """The next message from the server, awaited on the event loop while this (the view's) thread waits.

        Not asgiref's async_to_sync: it would leave its executor in the request's context, and the connection's next
        request would find it shut down."""
        if threading.current_thread() is threading.main_thread() and self._loop.is_running():
            raise RuntimeError("A request body is read from a view's thread, never on the event loop.")
        future = asyncio.run_coroutine_threadsafe(self._receive(), self._loop)
        try:
            return future.result(timeout=RECEIVE_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestAborted() from None

    def readinto(self, target) -> int:
        while not self._buffer and self._more:
            message = self._next_message()
            if message["type"] == "http.disconnect":
                self._finish()
                raise RequestAborted()
            chunk = message.get("body", b"")
            self.received += len(chunk)
            self._more = message.get("more_body", False)
            if not self._more:
                self._finish()
            if self.received > self.limit:
                self.too_big = True
                self._more = False
                self._finish()
                logger.warning("Refused a request body after reading %d bytes: the limit here is %d.",
                               self.received, self.limit)
                raise RequestDataTooBig(too_big_message(self.limit))
            self._buffer = chunk
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def _finish(self) -> None:
        self._loop.call_soon_threadsafe(self.done.set)

    def close(self) -> None:
        super().close()


class _EmptyBody(io.BytesIO):
    done = None


class _RequestThreads:
    """Threads for the sync views, kept between requests: each request has one to itself (Django's database
    connections belong to a thread), taken from the idle ones or made when none is idle, and given back after it.

    Django's own ASGI handler makes a new thread for every request, and hops between it and the event loop about five
    times per request (its middleware adapters); a request to a sync view here costs two hops (the view, then the
    response's close after it was sent) and no new thread."""

    MAX_IDLE = 16

    def __init__(self):
        self._idle: list[concurrent.futures.ThreadPoolExecutor] = []

    def take(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._idle:
            return self._idle.pop()
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-request")

    def give_back(self, thread: concurrent.futures.ThreadPoolExecutor) -> None:
        if len(self._idle) < self.MAX_IDLE:
            self._idle.append(thread)
        else:  # its database connections are its own: closed in it before it ends
            thread.submit(connections.close_all)
            thread.shutdown(wait=False)

    @staticmethod
    async def run(thread: concurrent.futures.ThreadPoolExecutor, function, *args):
        """`function(*args)` in `thread`, with this task's context (the script prefix, say)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(thread, functools.partial(context.run, function, *args))


class _SyncHandler(BaseHandler):
    """The middleware chain in its sync form, for the sync views: middleware and view run in one thread call."""

    def __init__(self):
        super().__init__()
        self.load_middleware(is_async=False)


class StreamingASGIHandler(ASGIHandler):
    """Django's ASGI handler, with per-route body limits and bodies streamed to the view (see the module's doc), and
    sync views run whole in a kept thread (`_RequestThreads`)."""

    def __init__(self):
        super().__init__()
        self._sync_handler = _SyncHandler()
        self._threads = _RequestThreads()

    async def handle(self, scope, receive, send):
        limit, async_view = _route_of(scope["path"])
        if not async_view:
            thread = self._threads.take()
            try:
                return await self._handle(scope, receive, send, limit, thread)
            finally:
                self._threads.give_back(thread)
        return await self._handle(scope, receive, send, limit, None)

    def _sync_response(self, request, scope):
        """In the request's thread: what Django's sync handler does for a request (WSGI's order)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self._sync_handler.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response

    async def _handle(self, scope, receive, send, limit: int, thread):
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        try:
            declared_length = int(declared) if declared is not None else None
        except ValueError:
            await self._refuse(scope, send, 400, "The Content-Length header is not a number.")
            return
        if declared_length is not None and declared_length > limit:
            await self._refuse(scope, send, 413, too_big_message(limit))
            return
        has_body = chunked or (declared_length or 0) > 0
        body_file = RequestBody(receive, limit) if has_body else _EmptyBody()
        set_script_prefix(get_script_prefix(scope))
        if thread is None:
            await signals.request_started.asend(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is not None and chunked and declared_length is None:
            # Django's multipart parser reads nothing of a body whose length is unknown; it reads to the end of this
            # one, which stops at the limit.
            request.META["CONTENT_LENGTH"] = str(limit)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request, send):
            if thread is None:
                response = await self.run_get_response(request)
            else:
                response = await self._threads.run(thread, self._sync_response, request, scope)
            if has_body and body_file.too_big:
                if response.status_code != 413:
                    response = self._refusal(scope, 413, too_big_message(limit))
                response["Connection"] = "close"  # the rest of the body is never read: the server must not drain it
            with contextlib.suppress(asyncio.CancelledError):  # the client disconnected while it was sent
                await self.send_response(response, send)
            return response

        async def listen_for_disconnect():
            # A body is the view's to read: listen only once it was all received. Without one, the server still
            # sends one empty `http.request` message first.
            if body_file.done is not None:
                await body_file.done.wait()
                if body_file.too_big:
                    await asyncio.Event().wait()  # the rest of the body is never read: nothing more to hear
            else:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise RequestAborted()
                    if not message.get("more_body", False):
                        break
            await self.listen_for_disconnect(receive)

        tasks = [asyncio.create_task(listen_for_disconnect()), asyncio.create_task(process_request(request, send))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass  # the client went away
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            if thread is None:
                await signals.request_finished.asend(sender=self.__class__)
            else:  # after the view, which a thread cannot be stopped in: the thread's connections are closed
                await self._threads.run(thread, functools.partial(signals.request_finished.send, sender=self.__class__))
        else:
            if thread is None:
                await sync_to_async(response.close)()
            else:
                await self._threads.run(thread, response.close)
        if thread is None:  # the request's thread ends with it (Django's handler): so do its database connections
            await sync_to_async(connections.close_all)()
        body_file.close()

    def _refusal(self, scope, status: int, message: str):
        shaped = next((render for prefix, render in _REFUSALS.items() if scope["path"].startswith(prefix)), None)
        if shaped is not None:
            body, content_type = shaped(status, message)
        elif scope["path"].startswith("/api/"):
            body, content_type = json.dumps({"error": message}), "application/json"
        else:  # a page: what a browser shows after a form upload that was too large
            body = REFUSAL_PAGE.format(message=escape(message))
            content_type = "text/html; charset=utf-8"
        response = HttpResponse(body, status=status, content_type=content_type)
        response["Connection"] = "close"
        return response

    async def _refuse(self, scope, send, status: int, message: str) -> None:
        """Answer without reading the body (the server closes the connection, since the body was not read)."""
        response = self._refusal(scope, status, message)
        await self.send_response(response, send)
