"""Server-sent events from a live stream (`studio/live.py`): console lines and status changes, one connection per page.

Each SSE message carries the Redis entry id as its `id`, so a reconnecting browser resumes where it stopped
(Last-Event-ID). A view checks access, then returns `sse_response(event_stream(key, last_id, is_final))`.
"""

from __future__ import annotations

import json
import re

import redis
from django.http import StreamingHttpResponse

from studio.redis_client import get_async_redis

REPLAY_ENTRIES = 300  # on a fresh connection, replay at most this many recent entries (each up to 200 lines)
BLOCK_MS = 10_000
ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
DEFAULT_FINAL_STATES = ("Completed", "Failed", "Canceled")


def _sse(event: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _messages(entries, final_states) -> tuple[list[str], bool]:
    """SSE messages for a list of stream entries; True when a final status was among them."""
    out, lines, finished = [], [], False
    last_id = None
    for entry_id, fields in entries:
        last_id = entry_id.decode()
        kind = fields.get(b"k")
        if kind == b"log":
            source = fields.get(b"s", b"out").decode()
            lines.extend([source, text] for text in fields.get(b"t", b"").decode("utf-8", "replace").split("\n"))
        elif kind == b"status":
            if lines:
                out.append(_sse("log", {"lines": lines}, last_id))
                lines = []
            status = fields.get(b"v", b"").decode()
            out.append(_sse("status", {"status": status}, last_id))
            finished = finished or status in final_states
        else:  # an event of the app's own (e.g. "metric"): passed on as it is
            data = {key.decode(): value.decode("utf-8", "replace") for key, value in fields.items() if key != b"k"}
            if lines:
                out.append(_sse("log", {"lines": lines}, last_id))
                lines = []
            out.append(_sse(kind.decode() if kind else "message", data, last_id))
    if lines:
        out.append(_sse("log", {"lines": lines}, last_id))
    return out, finished


async def event_stream(key: str, last_id: str | None, is_final, final_states=DEFAULT_FINAL_STATES):
    """SSE messages from one Redis stream until a final status passes (or `await is_final()` says it is over)."""
    client = get_async_redis()
    try:
        yield "retry: 1000\n\n"
        if last_id is None:
            recent = await client.xrevrange(key, count=REPLAY_ENTRIES)
            recent.reverse()
            if len(recent) == REPLAY_ENTRIES:
                yield _sse("truncated", {"note": "Earlier lines are in the full log."})
            messages, finished = _messages(recent, final_states)
            for message in messages:
                yield message
            if finished:
                yield _sse("end", {})
                return
            last_id = recent[-1][0].decode() if recent else "0-0"
        while True:
            response = await client.xread({key: last_id}, block=BLOCK_MS, count=500)
            if not response:
                if await is_final():
                    yield _sse("end", {})
                    return
                yield ": keep-alive\n\n"
                continue
            entries = response[0][1]
            last_id = entries[-1][0].decode()
            messages, finished = _messages(entries, final_states)
            for message in messages:
                yield message
            if finished:
                yield _sse("end", {})
                return
    except redis.RedisError:
        yield _sse("unavailable", {"note": "Live updates are unavailable; the page polls instead."})
    finally:
        await client.aclose()


def sse_response(stream) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def valid_last_event_id(request) -> str | None:
    """The Last-Event-ID a reconnecting browser sends; ValueError when it is not a stream entry id."""
    last_id = request.headers.get("Last-Event-ID") or None
    if last_id is not None and not ENTRY_ID.match(last_id):
        raise ValueError("Last-Event-ID must be a stream entry id.")
    return last_id
