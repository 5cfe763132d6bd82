"""The content-addressed blob store: snapshot files (and later outputs and model files) share it.

A blob lives at `DATA_DIR/blobs/<sha[:2]>/<sha[2:]>` (sha256 hex of its bytes). It is written once, by an atomic
rename, made read-only and never modified, so identical files are stored once, whoever stored them.

A file the studio keeps elsewhere (a run's output) can be the blob itself: `link` makes the blob a hard link to it
(or it a link to the blob already there), so one copy of the bytes serves both and the disk frees them when the last
name goes. `release` removes a blob nobody references any more; `gc_lock` keeps a release from racing a
registration that is about to reference the same content.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

SHA256 = re.compile(r"[0-9a-f]{64}")


def root() -> Path:
    """The folder of the store (blob paths are `root()/<sha[:2]>/<sha[2:]>`)."""
    return Path(settings.DATA_DIR) / "blobs"


def path(sha256: str) -> Path:
    """Where the blob with this sha256 (64 lowercase hex digits) lives. ValueError for anything else."""
    if not SHA256.fullmatch(sha256):
        raise ValueError(f"Not a sha256 digest: {sha256!r}")
    return root() / sha256[:2] / sha256[2:]


def exists(sha256: str) -> bool:
    return path(sha256).is_file()


def open_blob(sha256: str) -> BinaryIO:
    return open(path(sha256), "rb")


def store(staged: Path, sha256: str, *, synced: bool = False) -> None:
    """Move a staged file (whose sha256 the caller computed while writing it) into the store, unless a blob with that
    content is already there; then the staged copy is left for the caller's staging directory to remove. `synced`: the
    caller already flushed it to disk (fsync), so it is not done again."""
    blob = path(sha256)
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not synced:
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
    os.chmod(staged, 0o444)
    os.replace(staged, blob)


CHUNK = 1024 * 1024


def hash_file(source: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def link(kept: Path, sha256: str) -> None:
    """Make `kept` (a file whose sha256 is known, that will never change) and the blob one copy of the bytes.

    No blob yet: the blob becomes a hard link to `kept`. A blob already there: `kept` becomes a link to it and its
    own copy is freed. Both read-only. Where hard links cannot be made (another file system), the blob is a copy."""
    blob = path(sha256)
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(kept, 0o444)
    if blob.exists():
        if not os.path.samefile(blob, kept):
            with contextlib.suppress(OSError):  # cannot share: keep both copies, the content is the same
                spare = kept.with_name(f".{kept.name}.link")
                os.link(blob, spare)
                os.replace(spare, kept)
        return
    try:
        os.link(kept, blob)
    except FileExistsError:  # another process made it meanwhile
        return
    except OSError:
        staged = blob.with_name(f".{blob.name}.{os.getpid()}.partial")
        shutil.copyfile(kept, staged)
        os.chmod(staged, 0o444)
        os.replace(staged, blob)


@contextlib.contextmanager
def gc_lock(*, exclusive: bool) -> Iterator[None]:
    """Shared while content is being referenced (stored, then its rows written), exclusive while unreferenced blobs
    are released."""
    lock_path = Path(settings.DATA_DIR) / "blobs" / ".gc.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def release(sha256: str) -> int:
    """Remove the blob (the caller checked that nothing references it; hold `gc_lock(exclusive=True)`). Returns the
    bytes freed: 0 when another name (a run's output) still holds them."""
    blob = path(sha256)
    try:
        info = blob.stat()
        blob.unlink()
    except FileNotFoundError:
        return 0
    return info.st_size if info.st_nlink == 1 else 0
