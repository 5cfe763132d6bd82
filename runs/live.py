"""Live run signals through Redis: console lines, status changes and cancel requests.

Each run has one Redis stream (`studio:run:<id>:events`) carrying both console lines and status changes,
so a browser page needs one SSE connection for everything it shows. Entries are
`{"k": "log", "s": "out"|"err", "t": text}` (one entry carries one or more lines joined by "\\n") or
`{"k": "status", "v": status}`. The full console log is always in the run's log file; the stream is
for live viewers and is trimmed and expired.
"""

from __future__ import annotations

import logging
import re

import redis
from django.conf import settings

from studio.redis_client import get_redis

logger = logging.getLogger(__name__)
STREAM_TTL_SECONDS = 24 * 3600
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def stream_key(run_id: int) -> str:
    return f"studio:run:{run_id}:events"


def cancel_key(run_id: int) -> str:
    return f"studio:run:{run_id}:cancel"


def clean_line(raw: bytes) -> str:
    """Text safe to show: invalid UTF-8 replaced, ANSI escapes and other control characters removed.

    The browser inserts it as text (never HTML), so nothing a script prints becomes markup or a link.
    """
    text = raw.decode("utf-8", errors="replace")
    text = ANSI_ESCAPE.sub("", text)
    return CONTROL_CHARS.sub("", text.replace("\t", "    "))


def publish_lines(run_id: int, batch: list[tuple[str, str]]) -> None:
    append_lines(stream_key(run_id), batch)


def append_lines(key: str, batch: list[tuple[str, str]]) -> None:
    """Append console lines in one round trip; consecutive lines of the same stream share an entry."""
    if not batch:
        return
    pipe = get_redis().pipeline(transaction=False)
    maxlen = settings.STUDIO_LOG_STREAM_MAXLEN
    group: list[str] = []
    current = batch[0][0]
    for source, text in batch:
        if source != current or len(group) >= 200:
            pipe.xadd(key, {"k": "log", "s": current, "t": "\n".join(group)}, maxlen=maxlen, approximate=True)
            group, current = [], source
        group.append(text)
    pipe.xadd(key, {"k": "log", "s": current, "t": "\n".join(group)}, maxlen=maxlen, approximate=True)
    pipe.expire(key, STREAM_TTL_SECONDS)
    pipe.execute()


def publish_status(run_id: int, status: str) -> None:
    append_status(stream_key(run_id), status)


def append_status(key: str, status: str) -> None:
    """Tell live viewers; the database already holds the truth, so a Redis outage only delays pages."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.xadd(key, {"k": "status", "v": status}, maxlen=settings.STUDIO_LOG_STREAM_MAXLEN, approximate=True)
        pipe.expire(key, STREAM_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        logger.warning("Could not publish status %s to Redis stream %s", status, key, exc_info=True)


def request_cancel(run_id: int, reason: str) -> None:
    get_redis().set(cancel_key(run_id), reason, ex=STREAM_TTL_SECONDS)


def cancel_reason(run_id: int) -> str | None:
    value = get_redis().get(cancel_key(run_id))
    return value.decode("utf-8", errors="replace") if value is not None else None
