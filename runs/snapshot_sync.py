"""Snapshots sent as blobs: a client (the SDK's `upload_folder`) sends only the files the workspace does not hold.

1. `missing`: which sha256s of a manifest the studio needs (the REST route `POST .../snapshots/missing`).
2. `receive`: a blob sent in ranges (`PUT .../blobs/<sha256>` with `Content-Range: bytes START-END/TOTAL`, END
   inclusive, each request at most STUDIO_REQUEST_MAX_BYTES), appended to a partial file of the workspace; `state`
   says how many bytes are held, so an interrupted client continues where it stopped. The last range completes it:
   the sha256 is checked (a mismatch is refused and the partial removed) and the file waits, verified, for a snapshot.
   Small files go several to a request instead (`receive_files`, `POST .../blobs`, multipart, one part per file
   named by its sha256): a request per file would cost more than the bytes.
3. `create_snapshot`: a Snapshot from a manifest whose every file the workspace now holds, under the rules of uploads
   (`snapshots.check_manifest`). Finished uploads move into the blob store then (or are dropped when the store has
   the content already); the answer counts them (`uploaded_files`, `uploaded_bytes`).

What a workspace holds. A sha256 counts as present only when THIS workspace has it: a finished upload of its own, an
output of one of its runs, or a file of one of its RECENT_SNAPSHOTS newest snapshots, and the blob is in the store.
Anything else is asked for even when the store has the bytes (another workspace's), so no answer tells a workspace
what another one holds; storage is still shared (an upload whose content the store has is dropped, not stored
twice). Files of older snapshots, and model files uploaded to the registry (an app above this one), are asked for
again: sending them costs bytes, never correctness.

Uploads live in DATA_DIR/uploads/<workspace id>/: `<sha256>-<total>.partial` while being received (one writer at a
time, by a file lock; `.incoming` for a whole small file) and `<sha256>.done` once verified and flushed to disk (the
store takes it by a rename, without syncing it again). Files untouched for STALE_AFTER seconds are removed on
access: the upload routes sweep every workspace's folder at most once every SWEEP_EVERY seconds. A workspace's
unfinished uploads may hold about UPLOAD_ROOM_FACTOR x STUDIO_SNAPSHOT_MAX_BYTES.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from runs import snapshots
from runs.models import RunOutput, Snapshot
from studio import blobs
from studio.text import bidi_problem, visible

logger = logging.getLogger(__name__)

STALE_AFTER = 24 * 3600
SWEEP_EVERY = 600
RECENT_SNAPSHOTS = 50
UPLOAD_ROOM_FACTOR = 2
ROOM_RECOUNT = 10
ROOM_LEDGER = ".room"
READ_CHUNK = 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_RANGE = re.compile(r"bytes (\d{1,15})-(\d{1,15})/(\d{1,15})")
_EMPTY_RANGE = "bytes */0"
_QUERY_BATCH = 500  # sha256s per IN (...) query


class SyncError(Exception):
    """A refusal with the HTTP status the client should see and a message saying what to do."""

    def __init__(self, status: int, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.missing = missing or []


# Where uploads wait ----------------------------------------------------------------------------------------------------


def uploads_root() -> Path:
    return Path(settings.DATA_DIR) / "uploads"


def uploads_dir(workspace) -> Path:
    return uploads_root() / str(workspace.pk)


def _done(folder: Path, sha256: str) -> Path:
    return folder / f"{sha256}.done"


def _partials(folder: Path) -> dict[str, tuple[Path, int]]:
    """The workspace's partial uploads: sha256 -> (file, declared total). One listing of the folder."""
    found: dict[str, tuple[Path, int]] = {}
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.endswith(".partial"):
                sha256, _, total = name.removesuffix(".partial").partition("-")
                if total.isdigit():
                    found[sha256] = (folder / name, int(total))
    return found


def sweep(now: float | None = None) -> int:
    """Remove partial and finished uploads untouched for STALE_AFTER seconds, in every workspace; the count removed."""
    now = time.time() if now is None else now
    removed = 0
    root = uploads_root()
    if not root.is_dir():
        return 0
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if not entry.name.endswith((".partial", ".done", ".incoming")):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > STALE_AFTER:
                    os.unlink(entry.path)
                    removed += 1
        # The folders stay (an upload may be creating its file in one right now); they cost nothing.
    if removed:
        logger.info("Removed %d stale snapshot upload file(s).", removed)
    return removed


def sweep_if_due() -> None:
    """`sweep`, at most once every SWEEP_EVERY seconds (a stamp file's time says when it last ran)."""
    root = uploads_root()
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / ".swept"
    try:
        if time.time() - stamp.stat().st_mtime < SWEEP_EVERY:
            return
    except FileNotFoundError:
        pass
    stamp.touch()
    sweep()


# What a workspace holds ------------------------------------------------------------------------------------------------


def held(workspace, shas: Iterable[str]) -> set[str]:
    """The sha256s among `shas` this workspace holds (see the module's doc): a finished upload of its own, or content
    its runs' outputs or recent snapshots reference that is in the store."""
    wanted = set(shas)
    finished = _finished(uploads_dir(workspace), wanted)
    return finished | _referenced_and_stored(workspace, wanted - finished).keys()


def _finished(folder: Path, shas: set[str]) -> set[str]:
    """The sha256s among `shas` with a finished upload in `folder` (one listing, not a look-up per file)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    return shas & {name.removesuffix(".done") for name in names if name.endswith(".done")}


def _referenced_and_stored(workspace, shas: set[str]) -> dict[str, int]:
    """The sha256s among `shas` an output of the workspace's runs or one of its RECENT_SNAPSHOTS newest snapshots
    references and whose blob is in the store, with the blob's size. Looked up for every sha256 alike, stored
    elsewhere or not."""
    found: set[str] = set()
    ordered = sorted(shas)
    for start in range(0, len(ordered), _QUERY_BATCH):
        found.update(RunOutput.objects.filter(run__workspace=workspace, sha256__in=ordered[start:start + _QUERY_BATCH])
                     .values_list("sha256", flat=True))
    remaining = shas - found
    recent = Snapshot.objects.filter(workspace=workspace).order_by("-pk").annotate(text=Cast("manifest", TextField()))
    for low, high in ((0, 5), (5, RECENT_SNAPSHOTS)):  # the newest few usually answer everything
        if not remaining:
            break
        for text in recent.values_list("text", flat=True)[low:high]:
            listed = {entry["sha256"] for entry in orjson.loads(text)}
            found |= remaining & listed
            remaining -= listed
    return _stored_sizes(found)


def _stored_sizes(shas: set[str]) -> dict[str, int]:
    """The size of each blob in the store among `shas` (paths as text: pathlib costs more than the stat here)."""
    root = os.fspath(blobs.root())
    sizes = {}
    for sha in shas:
        with contextlib.suppress(FileNotFoundError):
            sizes[sha] = os.stat(f"{root}/{sha[:2]}/{sha[2:]}").st_size
    return sizes


def missing(workspace, shas: list[str]) -> tuple[list[str], dict[str, int]]:
    """The sha256s the studio needs (each once, in the order given), and for those partly received, the bytes held."""
    for sha in shas:
        _check_sha(sha)
    sweep_if_due()
    have = held(workspace, shas)
    needed = list(dict.fromkeys(sha for sha in shas if sha not in have))
    partials = _partials(uploads_dir(workspace))
    partial = {}
    for sha in needed:
        if sha in partials:
            with contextlib.suppress(FileNotFoundError):
                partial[sha] = partials[sha][0].stat().st_size
    return needed, partial


def state(workspace, sha256: str) -> dict:
    """How much of a blob this workspace holds: `{"sha256", "size", "received", "complete"}` (size None when unknown)."""
    _check_sha(sha256)
    done = _done(uploads_dir(workspace), sha256)
    with contextlib.suppress(FileNotFoundError):
        size = done.stat().st_size
        return _state(sha256, size, size, True)
    stored = _referenced_and_stored(workspace, {sha256})
    if sha256 in stored:
        return _state(sha256, stored[sha256], stored[sha256], True)
    partial = _partials(uploads_dir(workspace)).get(sha256)
    if partial is not None:
        with contextlib.suppress(FileNotFoundError):
            return _state(sha256, partial[1], partial[0].stat().st_size, False)
    return _state(sha256, None, 0, False)


def _state(sha256: str, size: int | None, received: int, complete: bool, written: int = 0) -> dict:
    return {"sha256": sha256, "size": size, "received": received, "complete": complete, "written": written}


def _check_sha(sha256: str) -> None:
    if not blobs.SHA256.fullmatch(sha256):
        raise SyncError(400, f"{sha256[:80]!r} is not a blob name: blobs are named by the sha256 of their bytes, "
                             "64 lowercase hexadecimal digits.")


# Receiving a blob ------------------------------------------------------------------------------------------------------


def parse_range(header: str) -> tuple[int, int, int]:
    """(start, length, total) of `Content-Range: bytes START-END/TOTAL` (END inclusive; `bytes */0` for an empty file)."""
    header = header.strip()
    if header == _EMPTY_RANGE:
        return 0, 0, 0
    found = _RANGE.fullmatch(header)
    if found is None:
        raise SyncError(400, "Send Content-Range: bytes START-END/TOTAL (END inclusive; 'bytes */0' for an empty file) "
                             "with the bytes START to END of the file as the body.")
    start, end, total = (int(value) for value in found.groups())
    if not start <= end < total:
        raise SyncError(400, f"Content-Range {header[:80]!r} is not a range of the file: START <= END < TOTAL.")
    return start, end - start + 1, total


def receive(workspace, sha256: str, content_range: str, body: BinaryIO, content_length: int | None) -> dict:
    """Append one range of a blob to the workspace's partial upload (see the module's doc); the state after it."""
    _check_sha(sha256)
    start, length, total = parse_range(content_range)
    limit = settings.STUDIO_SNAPSHOT_MAX_BYTES
    if total > limit:
        raise SyncError(413, f"A file of {total:,} bytes is over the snapshot limit of {limit:,} bytes "
                             "(STUDIO_SNAPSHOT_MAX_BYTES). Leave data and build outputs out of the source, or list "
                             "them in .amlignore.")
    if content_length is not None and content_length != length:
        raise SyncError(400, f"Content-Length is {content_length:,} but Content-Range names {length:,} bytes: send "
                             "exactly the bytes of the range.")
    sweep_if_due()
    folder = uploads_dir(workspace)
    folder.mkdir(parents=True, exist_ok=True)
    done = _done(folder, sha256)
    if done.is_file():
        size = done.stat().st_size
        return _state(sha256, size, size, True)
    partial = folder / f"{sha256}-{total}.partial"
    if not partial.exists():
        if start != 0:
            raise SyncError(409, f"This upload holds 0 of {total:,} bytes: send the range that starts at byte 0.")
        _check_room(folder, total, limit)
    with open(partial, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncError(409, "Another request is sending this blob right now: wait for it, then ask for the "
                                 "upload's state (GET this URL) and continue from there.") from None
        if done.is_file() or not _same_file(handle, partial):  # another request finished it meanwhile
            _remove_if_empty(handle, partial)
            return state(workspace, sha256)
        offset = os.fstat(handle.fileno()).st_size
        if start != offset:
            raise SyncError(409, f"This upload holds {offset:,} of {total:,} bytes: send the range that starts at "
                                 f"byte {offset:,} (GET this URL for the upload's state).")
        if start == 0:
            _drop_other_sizes(folder, sha256, partial)
        digest = hashlib.sha256() if offset == 0 else None
        written = _append(handle, body, length, digest)
        if written < length:
            raise SyncError(400, f"The body ended after {written:,} of the {length:,} bytes the range names; they are "
                                 f"kept: continue from byte {offset + written:,}.")
        if body.read(1):
            handle.truncate(offset)
            raise SyncError(400, f"The body is longer than the {length:,} bytes the range names; nothing of it was "
                                 "kept. Send exactly the bytes of the range.")
        received = offset + written
        if received < total:
            return _state(sha256, total, received, False, written)
        actual = digest.hexdigest() if digest is not None else blobs.hash_file(partial)
        if actual != sha256:
            partial.unlink()
            raise SyncError(400, f"The {total:,} bytes received have the sha256 {actual}, not {sha256}: the file changed "
                                 "while it was sent, or was damaged on the way. Hash it again and send it from byte 0.")
        os.fsync(handle.fileno())  # durable before it counts as held; the store does not sync it again
        os.replace(partial, done)
    logger.debug("Workspace %s received blob %s (%d bytes).", workspace.pk, sha256, total)
    return _state(sha256, total, total, True, written)


def receive_empty(workspace, sha256: str) -> dict:
    """`Content-Range: bytes */0`: the empty file, which needs no bytes."""
    if sha256 != EMPTY_SHA256:
        raise SyncError(400, f"An empty file has the sha256 {EMPTY_SHA256}, not {sha256}: hash the file again.")
    folder = uploads_dir(workspace)
    folder.mkdir(parents=True, exist_ok=True)
    _done(folder, sha256).touch()
    return _state(sha256, 0, 0, True)


def receive_files(workspace, parts: list) -> tuple[list[str], int]:
    """Small files sent whole, several in one request (multipart, each part named by its sha256): each is checked and
    kept as a finished upload. Returns the sha256s held now and the bytes written. A part whose bytes do not have its
    sha256 is not kept (the others are), and the answer is 400 naming it."""
    limit = settings.STUDIO_SNAPSHOT_MAX_BYTES
    for name, upload in parts:
        _check_sha(name)
        if upload.size > limit:
            raise SyncError(413, f"A file of {upload.size:,} bytes is over the snapshot limit of {limit:,} bytes "
                                 "(STUDIO_SNAPSHOT_MAX_BYTES).")
    sweep_if_due()
    folder = uploads_dir(workspace)
    folder.mkdir(parents=True, exist_ok=True)
    _check_room(folder, sum(upload.size for _, upload in parts), limit)
    held, written, refused = [], 0, []
    for name, upload in parts:
        done = _done(folder, name)
        if not done.is_file():
            actual, size = _write_whole(folder, name, upload)
            if actual != name:
                refused.append(f"{name} (its bytes have the sha256 {actual})")
                continue
            written += size
        held.append(name)
    if refused:
        raise SyncError(400, f"{len(refused)} file(s) arrived with other bytes than their sha256 says: "
                             f"{'; '.join(refused[:5])}. They changed while they were sent, or were damaged on the "
                             "way: hash them again and send them again.")
    return held, written


def _write_whole(folder: Path, sha256: str, upload) -> tuple[str, int]:
    """Write one whole file next to its finished name, checking its sha256; moved into place only when it matches."""
    digest, size = hashlib.sha256(), 0
    fd, temporary = tempfile.mkstemp(prefix=f"{sha256}.", suffix=".incoming", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in upload.chunks(READ_CHUNK):
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            handle.flush()
            if digest.hexdigest() == sha256:
                os.fsync(handle.fileno())
        if digest.hexdigest() == sha256:
            os.replace(temporary, _done(folder, sha256))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return digest.hexdigest(), size


def _append(handle, body: BinaryIO, length: int, digest) -> int:
    """Copy up to `length` bytes of the body to the end of `handle`; what arrived is kept even when the client goes
    away mid-body (the exception still ends the request)."""
    written = 0
    try:
        while written < length:
            chunk = body.read(min(READ_CHUNK, length - written))
            if not chunk:
                break
            handle.write(chunk)
            if digest is not None:
                digest.update(chunk)
            written += len(chunk)
    finally:
        handle.flush()
    return written


def _check_room(folder: Path, total: int, limit: int) -> None:
    """Refuse a new upload that would take the workspace's unfinished uploads past UPLOAD_ROOM_FACTOR x the limit.

    The bytes held are counted by listing the folder at most every ROOM_RECOUNT seconds and kept in a small ledger
    meanwhile (new uploads added to it): a count per new upload would make sending 2,000 files quadratic. Requests
    at the same moment may each miss the other's addition: the bound is approximate, as the module's doc says."""
    room = UPLOAD_ROOM_FACTOR * limit
    ledger = folder / ROOM_LEDGER
    now = time.time()
    counted_at, used = now, None
    with contextlib.suppress(FileNotFoundError, ValueError):
        at, held_bytes = ledger.read_text().split()
        if now - float(at) < ROOM_RECOUNT:
            counted_at, used = float(at), int(held_bytes)
    if used is None:
        used = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if entry.name != ROOM_LEDGER:
                    with contextlib.suppress(FileNotFoundError):
                        used += entry.stat().st_size
    if used + total > room:
        raise SyncError(413, f"This workspace's uploads that no snapshot has taken yet hold {used:,} bytes; with this "
                             f"file they would pass {room:,} bytes ({UPLOAD_ROOM_FACTOR} x STUDIO_SNAPSHOT_MAX_BYTES). "
                             "Create the snapshot of what was sent (POST .../snapshots), or wait a day for unfinished "
                             "uploads to expire.")
    with contextlib.suppress(OSError):
        ledger.write_text(f"{counted_at} {used + total}")


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _remove_if_empty(handle, path: Path) -> None:
    if os.fstat(handle.fileno()).st_size == 0 and _same_file(handle, path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _drop_other_sizes(folder: Path, sha256: str, keep: Path) -> None:
    """Partial uploads of the same sha256 that declared another size: one of them is wrong, and it is not this one
    that starts over."""
    for name in os.listdir(folder):
        if name.startswith(f"{sha256}-") and name.endswith(".partial") and name != keep.name:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()


# Making the snapshot ---------------------------------------------------------------------------------------------------


def check_source_name(name: str) -> str:
    name = name.strip() or "folder"
    if len(name) > 255:
        raise SyncError(400, "source_name is at most 255 characters: send the folder's own name.")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise SyncError(400, f"source_name {visible(name)[:80]!r} contains control characters; send the folder's name.")
    problem = bidi_problem(name, f"The source name {visible(name)[:80]!r}")
    if problem:
        raise SyncError(400, f"Refused: {problem}")
    return name


def create_snapshot(workspace, user, files: list[dict], *, ignore_file: str, ignored_count: int,
                    source_name: str) -> tuple[Snapshot, int, int]:
    """The Snapshot of `files` (`{"path", "sha256", "size"}`), all of which the workspace must hold; with the files and
    bytes that were uploaded for it (finished uploads it took). SyncError 400 naming what is missing or wrong."""
    if ignore_file not in ("", *snapshots.IGNORE_FILES):
        raise SyncError(400, f"ignore_file is {ignore_file[:80]!r}: send '.amlignore', '.gitignore' or ''.")
    try:
        entries = snapshots.check_manifest(files, ignore_file, snapshots.Budget.from_settings())
    except snapshots.SnapshotError as error:
        raise SyncError(400, str(error)) from None
    source_name = check_source_name(source_name)
    folder = uploads_dir(workspace)
    shas = {entry["sha256"] for entry in entries}
    with blobs.gc_lock(exclusive=False):
        uploaded = {sha: _done(folder, sha) for sha in _finished(folder, shas)}
        sizes = _referenced_and_stored(workspace, shas - uploaded.keys())
        _refuse_missing(entries, shas - uploaded.keys() - sizes.keys())
        sizes.update({sha: path.stat().st_size for sha, path in uploaded.items()})
        _refuse_wrong_sizes(entries, sizes)
        uploaded_bytes = 0
        for sha, path in uploaded.items():
            _take(path, sha)
            uploaded_bytes += sizes[sha]
        with transaction.atomic():
            snapshot = Snapshot.objects.create(
                workspace=workspace, created_by=user if getattr(user, "is_authenticated", False) else None,
                source_name=source_name, ignore_file=ignore_file, ignored_count=ignored_count,
                file_count=len(entries), total_bytes=sum(entry["size"] for entry in entries), manifest=entries,
            )
    logger.info("Snapshot %s of workspace %s: %d files, %d bytes; %d file(s), %d bytes uploaded for it.", snapshot.pk,
                workspace.pk, snapshot.file_count, snapshot.total_bytes, len(uploaded), uploaded_bytes)
    return snapshot, len(uploaded), uploaded_bytes


def _refuse_missing(entries: list[dict], absent: set[str]) -> None:
    if not absent:
        return
    paths = [entry["path"] for entry in entries if entry["sha256"] in absent]
    shown = ", ".join(repr(path) for path in paths[:5]) + (f" and {len(paths) - 5:,} more" if len(paths) > 5 else "")
    raise SyncError(400, f"The studio does not hold {len(paths):,} of the files yet: {shown}. Send them first "
                         "(PUT .../blobs/<sha256>), then create the snapshot again.", sorted(absent))


def _refuse_wrong_sizes(entries: list[dict], sizes: dict[str, int]) -> None:
    for entry in entries:
        if sizes[entry["sha256"]] != entry["size"]:
            raise SyncError(400, f"{entry['path'][:200]!r} is listed with {entry['size']:,} bytes, but its content "
                                 f"({entry['sha256']}) has {sizes[entry['sha256']]:,}: hash the folder again.")


def _take(done: Path, sha256: str) -> None:
    """Move a finished upload into the blob store, or drop it when the store has the content already."""
    try:
        blobs.store(done, sha256, synced=True)
    except FileNotFoundError:  # a snapshot made at the same moment took it
        return
    with contextlib.suppress(FileNotFoundError):
        done.unlink()  # still here: the store had the content
