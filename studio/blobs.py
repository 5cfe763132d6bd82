"""The content-addressed blob store: snapshot files (and later outputs and model files) share it.

A blob lives at `DATA_DIR/blobs/<sha[:2]>/<sha[2:]>` (sha256 hex of its bytes). It is written once, by an atomic
rename, made read-only and never modified, so identical files are stored once, whoever stored them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

SHA256 = re.compile(r"[0-9a-f]{64}")


def path(sha256: str) -> Path:
    """Where the blob with this sha256 (64 lowercase hex digits) lives. ValueError for anything else."""
    if not SHA256.fullmatch(sha256):
        raise ValueError(f"Not a sha256 digest: {sha256!r}")
    return Path(settings.DATA_DIR) / "blobs" / sha256[:2] / sha256[2:]


def exists(sha256: str) -> bool:
    return path(sha256).is_file()


def open_blob(sha256: str) -> BinaryIO:
    return open(path(sha256), "rb")


def store(staged: Path, sha256: str) -> None:
    """Move a staged file (whose sha256 the caller computed while writing it) into the store, unless a blob with that
    content is already there; then the staged copy is left for the caller's staging directory to remove."""
    blob = path(sha256)
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    with open(staged, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(staged, 0o444)
    os.replace(staged, blob)
