"""Reading a run's console log file for pages and the polling fallback."""

from __future__ import annotations

import os
from pathlib import Path

from runs.live import clean_line

TAIL_MAX_BYTES = 4 * 1024 * 1024
CHUNK_MAX_BYTES = 512 * 1024
LINE_DISPLAY_BYTES = 16 * 1024


def _display(raw: bytes) -> str:
    text = clean_line(raw[:LINE_DISPLAY_BYTES])
    return text + (" … [line truncated]" if len(raw) > LINE_DISPLAY_BYTES else "")


def tail(path: Path, lines: int = 2000) -> tuple[list[str], bool]:
    """The last `lines` display lines of the log, and whether earlier lines were left out."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], False
    start = max(0, size - TAIL_MAX_BYTES)
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    if start > 0 and raw_lines:
        raw_lines.pop(0)  # a partial first line
    truncated = start > 0 or len(raw_lines) > lines
    return [_display(line.rstrip(b"\r")) for line in raw_lines[-lines:]], truncated


def chunk(path: Path, offset: int) -> tuple[list[str], int]:
    """Whole lines from byte `offset` on (at most CHUNK_MAX_BYTES), and the offset to ask for next."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    offset = min(max(0, offset), size)
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(CHUNK_MAX_BYTES)
    end = data.rfind(b"\n")
    if end < 0:
        if len(data) < CHUNK_MAX_BYTES:
            return [], offset  # a line still being written
        end = len(data) - 1  # one enormous line: hand it over in pieces
    body = data[: end + 1]
    return [_display(line.rstrip(b"\r")) for line in body.split(b"\n")[:-1]], offset + len(body)


def line_count(path: Path) -> int:
    count = 0
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                count += block.count(b"\n")
    except FileNotFoundError:
        return 0
    return count


def size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0
