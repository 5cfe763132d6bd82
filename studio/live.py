"""Live event streams through Redis: what a page shows as it happens, for anything that runs (runs, image builds, and
later deployments).

Each thing has one Redis stream (its key is chosen by the app that owns it), carrying both console lines and status
changes, so a browser page needs one SSE connection for everything it shows (see `studio/sse.py`). Entries are
`{"k": "log", "s": "out"|"err", "t": text}` (one entry carries one or more lines joined by "\\n") or
`{"k": "status", "v": status}`. The full console is always in a log file; a stream is for live viewers and is
trimmed and expired.

Signals (a cancel request, say) are plain keys with a time to live.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings

from studio.redis_client import get_redis

logger = logging.getLogger(__name__)
STREAM_TTL_SECONDS = 24 * 3600
LINES_PER_ENTRY = 200


def append_lines(key: str, batch: list[tuple[str, str]], marks: dict[str, str] | None = None) -> None:
    """Append console lines in one round trip; consecutive lines of the same source share an entry.

    `marks` (key: value) are set in the same transaction: a follower of a log file notes how far it published, and
    the note and the lines land together or not at all, so its successor neither repeats nor skips a line.

    Raises redis.RedisError: the caller (a console sink) decides what an outage means, since its log file has
    every line anyway.
    """
    if not batch and not marks:
        return
    pipe = get_redis().pipeline(transaction=bool(marks))
    for mark_key, value in (marks or {}).items():
        pipe.set(mark_key, value, ex=STREAM_TTL_SECONDS)
    if not batch:
        pipe.execute()
        return
    maxlen = settings.STUDIO_LOG_STREAM_MAXLEN
    group: list[str] = []
    current = batch[0][0]
    for source, text in batch:
        if source != current or len(group) >= LINES_PER_ENTRY:
            pipe.xadd(key, {"k": "log", "s": current, "t": "\n".join(group)}, maxlen=maxlen, approximate=True)
            group, current = [], source
        group.append(text)
    pipe.xadd(key, {"k": "log", "s": current, "t": "\n".join(group)}, maxlen=maxlen, approximate=True)
    pipe.expire(key, STREAM_TTL_SECONDS)
    pipe.execute()


def append_status(key: str, status: str) -> None:
    """Tell live viewers; the database already holds the truth, so a Redis outage only delays pages."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.xadd(key, {"k": "status", "v": status}, maxlen=settings.STUDIO_LOG_STREAM_MAXLEN, approximate=True)
        pipe.expire(key, STREAM_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        logger.warning("Could not publish status %s to Redis stream %s", status, key, exc_info=True)


def append_event(key: str, kind: str, fields: dict[str, str]) -> None:
    """An event of the app's own (`{"k": kind, **fields}`, e.g. a new metric point), passed on by the SSE stream as
    it is. Best effort like a status: the database holds the truth, so an outage only delays pages."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.xadd(key, {"k": kind, **fields}, maxlen=settings.STUDIO_LOG_STREAM_MAXLEN, approximate=True)
        pipe.expire(key, STREAM_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        logger.warning("Could not publish a %s event to Redis stream %s", kind, key, exc_info=True)


def claim_note(key: str, ttl_seconds: float) -> bool:
    """True for the first caller in `ttl_seconds` (a Redis SET NX): "do this at most once in a while"."""
    return bool(get_redis().set(key, "1", nx=True, ex=max(1, int(ttl_seconds))))


def set_signal(key: str, value: str) -> None:
    get_redis().set(key, value, ex=STREAM_TTL_SECONDS)


def get_signal(key: str) -> str | None:
    value = get_redis().get(key)
    return value.decode("utf-8", errors="replace") if value is not None else None
