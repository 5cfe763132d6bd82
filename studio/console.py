"""Consoles: what a process prints, kept whole in a log file and shown live (run consoles, image build logs, and later
deployment instances' logs).

- `ConsoleSink` receives raw output from whatever watches the process (reader threads call `feed`); one writer
  thread appends it to the log file and publishes display lines to a live stream in batches, so a script printing
  fast costs one Redis round trip per batch, not per line.
- `LineSplitter` turns a byte stream (a container's attach stream, say) into lines for a sink.
- `tail` and `chunk` read a log file back for pages and for the polling fallback, cut and cleaned like the live view.

Every line shown is text: invalid UTF-8 replaced, ANSI escapes and control characters removed (`clean_line`); pages
insert it as text, never as HTML.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import threading
from pathlib import Path

import redis
from django.conf import settings

from studio import live

logger = logging.getLogger(__name__)

ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
READ_CHUNK = 64 * 1024  # the longest piece of a line handed over at once
STDERR_TAIL_LINES = 15
TRUNCATED_NOTE = " … [line truncated in the live view; the full line is in the log file]"
TAIL_MAX_BYTES = 4 * 1024 * 1024
CHUNK_MAX_BYTES = 512 * 1024
BATCH_LINES = 2000
MARK = "mark"  # a queue item that is not console output (see ConsoleSink.mark)


def clean_line(raw: bytes) -> str:
    """Text safe to show: invalid UTF-8 replaced, ANSI escapes and other control characters removed."""
    text = raw.decode("utf-8", errors="replace")
    text = ANSI_ESCAPE.sub("", text)
    return CONTROL_CHARS.sub("", text.replace("\t", "    "))


def display_line(raw: bytes, limit: int | None = None) -> str:
    """One line as pages show it: cleaned, and cut at `limit` bytes with a note saying so."""
    limit = settings.STUDIO_LOG_LIVE_LINE_BYTES if limit is None else limit
    text = clean_line(raw[:limit])
    return text + TRUNCATED_NOTE if len(raw) > limit else text


class ConsoleSink:
    """Appends console output to `log_path` and publishes display lines to the live stream `stream_key`.

    `feed(source, chunk)` takes a line (or a piece of a very long one) of stdout ("out") or stderr ("err"). The last
    lines of stderr are kept in `stderr_tail` for failure messages. `close()` writes what is left and stops.
    """

    def __init__(self, stream_key: str, log_path: Path | None, offset_key: str | None = None):
        self.stream_key = stream_key
        self.log_path = log_path  # None: only publish (the log is written by someone else)
        # With a log: where the log's length is noted with each published batch (atomically), so whoever takes the
        # console over publishes what was written but not yet shown (`catch_up`).
        self.offset_key = offset_key
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.line_count = 0
        self.lost_bytes = 0
        self.write_error = ""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._continuing = {"out": False, "err": False}
        self._redis_ok = True
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"console-{stream_key}", daemon=True)
        self._writer.start()

    def feed(self, source: str, chunk: bytes) -> None:
        self._queue.put((source, chunk))

    def mark(self, key: str, value: str) -> None:
        """Set `key` to `value` in the live store together with the lines fed before this call (one transaction)."""
        self._queue.put((MARK, (key, value)))

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=60)

    def _write_loop(self) -> None:
        limit = settings.STUDIO_LOG_LIVE_LINE_BYTES
        log_file = self._open_log()
        try:
            while True:
                item = self._queue.get()
                batch_raw, batch_live, marks, done = [], [], {}, item is None
                while item is not None:
                    source, chunk = item
                    if source == MARK:  # the batch ends here: the mark covers exactly what came before it
                        marks[chunk[0]] = chunk[1]
                        break
                    batch_raw.append(chunk)
                    live_text = self._live_text(source, chunk, limit)
                    if live_text is not None:
                        batch_live.append((source, live_text))
                    if len(batch_raw) >= BATCH_LINES:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                self._write(log_file, b"".join(batch_raw))
                if self.offset_key and log_file is not None and batch_raw:
                    marks[self.offset_key] = str(log_file.tell())
                self._publish(batch_live, marks)
                if done:
                    return
        finally:
            if log_file is not None:
                log_file.close()

    def _open_log(self):
        if self.log_path is None:
            return None
        try:
            return open(self.log_path, "ab", buffering=0)
        except OSError as error:
            self.write_error = error.strerror or str(error)
            return None

    def _write(self, log_file, data: bytes) -> None:
        """Append to the log; what cannot be written (a full disk) is counted, and the live view still shows it."""
        if self.log_path is None:
            return
        if log_file is None:
            self.lost_bytes += len(data)
            return
        try:
            log_file.write(data)
        except OSError as error:
            self.lost_bytes += len(data)
            self.write_error = self.write_error or (error.strerror or str(error))

    def loss_note(self) -> str:
        """For the run's reason: what of the console could not be written to its log file, or ""."""
        if not self.lost_bytes and not self.write_error:
            return ""
        return (f"{self.lost_bytes:,} bytes of console output could not be written to the log file "
                f"({self.write_error or 'unknown error'}); the live view showed them.")

    def _live_text(self, source: str, chunk: bytes, limit: int) -> str | None:
        """One display line per console line; pieces of an over-long line after the first are dropped."""
        ends_line = chunk.endswith(b"\n")
        continuing = self._continuing[source]
        self._continuing[source] = not ends_line
        if continuing:
            return None
        self.line_count += 1
        text = clean_line(chunk[:limit].rstrip(b"\r\n"))
        if len(chunk) > limit or not ends_line and len(chunk) >= limit:
            text += TRUNCATED_NOTE
        if source == "err":
            self.stderr_tail.append(text)
        return text

    def _publish(self, batch: list[tuple[str, str]], marks: dict[str, str] | None = None) -> None:
        if not batch and not marks:
            return
        try:
            live.append_lines(self.stream_key, batch, marks)
            self._redis_ok = True
        except redis.RedisError:
            if self._redis_ok:  # say it once per outage; the log file still has every line
                logger.warning("Live log %s not published to Redis", self.stream_key, exc_info=True)
            self._redis_ok = False


class LogFollower:
    """Publishes a console log file to its live stream as something else (a run's keeper) appends to it.

    It reads from `offset` on (where an earlier follower stopped: see `live_offset`), splits the bytes into lines as the
    sink does, tells stderr lines by `err_index` (a file of decimal offsets where stderr lines start) and publishes in
    batches. `stop()` reads what is left and returns. Nothing here writes the log: a follower that dies loses nothing.
    """

    POLL_SECONDS = 0.02

    def __init__(self, stream_key: str, log_path: Path, err_index: Path | None = None, offset: int = 0,
                 offset_key: str | None = None):
        self.sink = ConsoleSink(stream_key, None)
        self.log_path, self.err_index = log_path, err_index
        self.offset = offset
        self.offset_key = offset_key  # where the offset published up to is kept, atomically with the lines
        self._err_offsets: set[int] = set()
        self._err_read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"follow-{stream_key}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)
        self.sink.close()

    def _loop(self) -> None:
        pending = b""  # read, not yet handed to the sink (a partial line); it starts at self.offset - len(pending)
        while True:
            stopping = self._stop.is_set()
            data = self._read()
            if data:
                self.offset += len(data)
                pending = self._feed(pending + data, final=False)
            elif stopping:
                self._feed(pending, final=True)
                return
            else:
                self._stop.wait(self.POLL_SECONDS)

    def _read(self) -> bytes:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.offset)
                return handle.read(CHUNK_MAX_BYTES)
        except FileNotFoundError:
            return b""

    def _feed(self, pending: bytes, *, final: bool) -> bytes:
        """Hand whole lines (and READ_CHUNK pieces of long ones) to the sink; keep a partial last line."""
        self._load_err_offsets()
        start = self.offset - len(pending)  # the log offset of pending's first byte
        position = 0
        while position < len(pending):
            newline = pending.find(b"\n", position, position + READ_CHUNK)
            if newline < 0 and len(pending) - position < READ_CHUNK and not final:
                break
            end = newline + 1 if newline >= 0 else min(len(pending), position + READ_CHUNK)
            source = "err" if start + position in self._err_offsets else "out"
            self.sink.feed(source, pending[position:end])
            position = end
        if self.offset_key is not None and position:
            self.sink.mark(self.offset_key, str(start + position))
        return pending[position:]

    def _load_err_offsets(self) -> None:
        if self.err_index is None:
            return
        try:
            with open(self.err_index, "rb") as handle:
                handle.seek(self._err_read)
                data = handle.read()
        except FileNotFoundError:
            return
        complete = data.rfind(b"\n") + 1
        self._err_offsets.update(int(line) for line in data[:complete].split() if line.isdigit())
        self._err_read += complete


def catch_up(stream_key: str, log_path: Path, offset_key: str) -> int:
    """Publish what a log holds past the offset noted at `offset_key` (written, never shown: its writer died between
    the two), before a new writer appends to it. Returns the log's length: where the new writer starts."""
    length = log_path.stat().st_size if log_path.exists() else 0
    try:
        published = int(live.get_signal(offset_key) or length)
    except (redis.RedisError, ValueError):
        return length
    if published < length:
        follower = LogFollower(stream_key, log_path, None, published, offset_key)
        follower.stop()  # reads to the end, publishes, returns
    return length


class LineSplitter:
    """Turns a byte stream into lines (or READ_CHUNK pieces of very long ones) for a console sink."""

    def __init__(self, source: str, sink):
        self.source, self.sink, self.buffer = source, sink, b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            newline = self.buffer.find(b"\n")
            if newline < 0:
                if len(self.buffer) >= READ_CHUNK:
                    self.sink.feed(self.source, self.buffer[:READ_CHUNK])
                    self.buffer = self.buffer[READ_CHUNK:]
                    continue
                return
            line, self.buffer = self.buffer[: newline + 1], self.buffer[newline + 1 :]
            while len(line) > READ_CHUNK:
                self.sink.feed(self.source, line[:READ_CHUNK])
                line = line[READ_CHUNK:]
            self.sink.feed(self.source, line)

    def close(self) -> None:
        if self.buffer:
            self.sink.feed(self.source, self.buffer)
            self.buffer = b""


# Reading a log file back --------------------------------------------------------------------------------------------


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
            if len(raw_lines) < lines:  # room for it: show it from its start, cut as the live view cuts it
                raw_lines.insert(0, _line_from_start(handle, start))
    truncated = start > 0 or len(raw_lines) > lines
    return [display_line(line.rstrip(b"\r")) for line in raw_lines[-lines:]], truncated


def _line_from_start(handle, inside: int) -> bytes:
    """The start of the line that byte `inside` is part of (enough of it for `display_line` to cut with its note)."""
    position = inside
    while position > 0:
        step = min(CHUNK_MAX_BYTES, position)
        handle.seek(position - step)
        newline = handle.read(step).rfind(b"\n")
        if newline >= 0:
            position = position - step + newline + 1
            break
        position -= step
    handle.seek(position)
    start = handle.read(settings.STUDIO_LOG_LIVE_LINE_BYTES + 1)
    newline = start.find(b"\n")
    return start[:newline] if newline >= 0 else start


def chunk(path: Path, offset: int) -> tuple[list[str], int]:
    """Display lines from byte `offset` on (at most CHUNK_MAX_BYTES), and the offset to ask for next.

    A line longer than CHUNK_MAX_BYTES is shown once, cut with the same note as the live view; the rest of it is
    skipped, so following the log never shows a piece of a line as a line of its own.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    offset = min(max(0, offset), size)
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(CHUNK_MAX_BYTES)
        end = data.rfind(b"\n")
        if end >= 0:
            body = data[: end + 1]
            return [display_line(line.rstrip(b"\r")) for line in body.split(b"\n")[:-1]], offset + len(body)
        if len(data) < CHUNK_MAX_BYTES:
            return [], offset  # a line still being written
        # One enormous line: show its start, then skip to its end (or to what is written of it so far).
        line_start = data
        skipped = offset + len(data)
        while block := handle.read(CHUNK_MAX_BYTES):
            newline = block.find(b"\n")
            if newline >= 0:
                return [display_line(line_start)], skipped + newline + 1
            skipped += len(block)
    return [], offset  # not ended yet: shown once its newline is written


def size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def line_count(path: Path) -> int:
    count = 0
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                count += block.count(b"\n")
    except FileNotFoundError:
        return 0
    return count
